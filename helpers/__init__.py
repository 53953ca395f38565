"""Helpers for the industrial defect recognition notebooks.

The package is layered; each layer imports only the layers below it::

    helpers.backend, helpers.run   TensorFlow/Keras set-up; the command line (run notebooks, tests)
    helpers.core                   formats and plumbing: imports nothing else of helpers
    helpers.data                   datasets, splits, augmentation, input pipeline (imports core, backend)
    helpers.modeling               builders, weight files, losses, metrics, training, runs (imports core, backend)
    helpers.studies                experiments on top of data and modeling
    helpers.deploy                 export, prediction, report, HTTP serving (on top of data, modeling, studies)

``tests/test_packaging.py`` checks the rule. Import modules explicitly
(``from helpers.core import rle``); importing a package loads nothing heavy and has no side
effects. Keras/TensorFlow are only imported through :mod:`helpers.backend`.
"""

__version__ = "0.1.0"

__all__ = ["backend", "core", "data", "deploy", "modeling", "run", "studies"]
