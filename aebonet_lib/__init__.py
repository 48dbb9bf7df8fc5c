"""aebonet_lib: the library behind the AE-BoNet bone age course.

Two faces (ARCHITECTURE.md). The student library, what the book imports: ``paper`` (the
recipe), ``config``, ``phantom`` (synthetic radiographs), ``data`` (loading, preprocessing,
tf.data), ``evaluation`` (metrics, plots, Grad-CAM), ``experiments`` (chapter 7's studies),
``results`` (the paper's tables and ours), and the doors ``training`` and ``speed``. The
engine, behind one door: ``_engine`` (run folders, resume, devices, caches and readers,
predictions and trust, benchmarks, result collection, the ``aebonet`` command).
"""

__version__ = "0.1.0"
