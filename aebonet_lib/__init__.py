"""aebonet_lib: the library behind the AE-BoNet bone age course.

The method reads like the paper in ``paper`` (the recipe); the subpackages follow the
data's journey around it: ``phantom`` (synthetic radiographs), ``data`` (reading,
preprocessing, the cache, splits, tf.data), ``models`` (baselines, measures), ``runs``
(run folders, resume, devices), ``evaluation`` (predictions and flags, metrics, plots,
tables), ``experiments`` (controls, label efficiency, real data), ``bench`` and ``cli``
(the ``aebonet`` command). ARCHITECTURE.md draws the journey.
"""

__version__ = "0.1.0"

import warnings

# Keras 3.10 (Colab's) loads a one-input model with its input as a one-item list, then warns at every
# call with the image tensor; the call is right, so the chapters hide that one warning, for the input "image".
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"The structure of `inputs` doesn't match the expected structure\.\nExpected: \['image'\]\n")
