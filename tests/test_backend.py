"""TensorFlow's start-up noise is filtered at import; real messages pass; DEFECT_TF_LOGS=1 shows all."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DEFECT_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**environment, **env})


def test_importing_the_backend_and_listing_devices_prints_nothing():
    done = _child("from helpers.backend import tf\ntf.config.list_physical_devices('GPU')\nprint('ok')")
    assert done.returncode == 0 and done.stdout == "ok\n"
    assert done.stderr == "", done.stderr


def test_the_filter_passes_real_messages_and_drops_benign_ones():
    code = (
        "import os\nfrom helpers import backend\n"
        "with backend._filtered_stderr(True):\n"
        "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "    os.write(2, b'E0000 something real went wrong\\n')\n"
    )
    done = _child(code)
    assert done.returncode == 0
    assert done.stderr == "E0000 something real went wrong\n"


def test_a_switch_brings_the_logs_back():
    done = _child("import helpers.backend", DEFECT_TF_LOGS="1")
    if sys.platform.startswith("linux") and not os.path.exists("/dev/nvidia0"):
        assert "cuda" in done.stderr.lower() or "onednn" in done.stderr.lower()
