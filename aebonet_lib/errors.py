"""The one exception a user should ever see: bad input, said in one line."""


class AebonetError(Exception):
    """Report a problem with the user's input: what is wrong, where, and how to fix it.

    The command line prints the message on one line and exits with status 2;
    a notebook shows it as an ordinary exception. Never raise it for a bug in
    the library itself.
    """
