"""The `aebonet` command's entry point: `python -m aebonet_lib.cli` (the commands the shipped results record)."""

import sys

from aebonet_lib._engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
