"""The one place that selects the Keras flavour, then imports TensorFlow, Keras 2 and segmentation-models.

``SM_FRAMEWORK=tf.keras`` and ``TF_USE_LEGACY_KERAS=1`` must be set before the first Keras
import, so every module that needs Keras imports it from here::

    from helpers.backend import keras, sm, tf

TensorFlow's start-up lines that are not problems (no CUDA driver on a CPU machine, oneDNN
notices, plugin registration) are dropped; anything else it writes while importing is passed on.
``DEFECT_TF_LOGS=1`` shows TensorFlow's own logging unfiltered.
"""

import contextlib
import io
import os
import re
import sys
import tempfile

os.environ["SM_FRAMEWORK"] = "tf.keras"
os.environ["TF_USE_LEGACY_KERAS"] = "1"

VERBOSE = os.environ.get("DEFECT_TF_LOGS", "") not in ("", "0")
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# start-up lines of a CPU-only machine that read like errors but are not
BENIGN_STARTUP = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
    r"Could not find cuda drivers|failed call to cuInit|cuda_executor|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"TF-TRT Warning|computation placer already registered|This TensorFlow binary is optimized|"
    r"rebuild TensorFlow with the appropriate compiler flags|CUDA_ERROR_NO_DEVICE|cuda_diagnostics"
)


@contextlib.contextmanager
def _filtered_stderr(enabled: bool):
    """Capture file descriptor 2 (C++ logging) while importing; pass on the lines that are not benign."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if line.strip() and not BENIGN_STARTUP.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


with _filtered_stderr(not VERBOSE):
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the framework it chose
        import segmentation_models as sm  # noqa: E402
    # the CUDA probe logs "failed call to cuInit" on a CPU machine; run it here, filtered (it only lists
    # devices: memory growth and visible devices can still be set afterwards)
    tf.config.list_physical_devices("GPU")

__all__ = ["keras", "sm", "tf"]
