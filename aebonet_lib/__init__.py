"""aebonet_lib: the library behind the AE-BoNet bone age course.

Every function a chapter calls lives in one of these small modules:
``phantom`` (synthetic radiographs), ``data`` and ``preprocess`` (real data in),
``cache``, ``splits`` and ``pipeline`` (arrays on disk to batches), ``config``
(presets), ``models``, ``training``, ``predict``, ``metrics``, ``plots``,
``experiments``, ``bench`` and ``cli`` (the ``aebonet`` command).
"""

__version__ = "0.1.0"
