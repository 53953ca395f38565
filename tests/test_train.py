"""Training loop: schedule, persistent best state, kill-and-resume, and two-device mirroring (subprocesses)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import train
from helpers.backend import keras, tf

ROOT = Path(__file__).resolve().parents[1]

# (step, expected lr) for base 1.0, 100 steps, 10 warm-up steps, min 0.0, warm-up start 0.1
SCHEDULE_CASES = [(0, 0.1), (5, 0.55), (10, 1.0), (55, 0.5), (100, 0.0), (150, 0.0)]


@pytest.mark.parametrize("step, expected", SCHEDULE_CASES)
def test_warmup_cosine_values(step, expected):
    schedule = train.WarmupCosine(1.0, total_steps=100, warmup_steps=10)
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_warmup_cosine_round_trips_through_config():
    schedule = train.WarmupCosine(0.01, 50, 5, min_lr=0.001)
    again = train.WarmupCosine.from_config(schedule.get_config())
    assert float(again(30)) == pytest.approx(float(schedule(30)))


@pytest.mark.parametrize("kwargs", [dict(base_lr=1.0, total_steps=0), dict(base_lr=1.0, total_steps=10, warmup_steps=11),
                                    dict(base_lr=0.0, total_steps=10), dict(base_lr=0.1, total_steps=10, min_lr=0.2)])
def test_warmup_cosine_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        train.WarmupCosine(**kwargs)


def tiny_model():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    return model


def test_best_checkpoint_keeps_state_across_instances(tmp_path):
    model = tiny_model()
    first = train.BestCheckpoint(tmp_path, monitor="val_loss", mode="min", patience=2)
    first.set_model(model)
    for epoch, value in enumerate([0.5, 0.3, 0.4]):
        first.on_epoch_end(epoch, {"val_loss": value})
    assert json.loads((tmp_path / "state.json").read_text())["best_epoch"] == 1
    assert (tmp_path / "best.weights.h5").is_file()
    resumed = train.BestCheckpoint(tmp_path, monitor="val_loss", mode="min", patience=2)
    resumed.set_model(model)
    assert resumed.state["best"] == pytest.approx(0.3) and resumed.state["wait"] == 1
    resumed.on_epoch_end(3, {"val_loss": 0.35})  # second epoch without gain -> stop
    assert model.stop_training is True


def test_best_checkpoint_names_a_missing_monitor(tmp_path):
    callback = train.BestCheckpoint(tmp_path, monitor="val_score")
    callback.set_model(tiny_model())
    with pytest.raises(ValueError, match="val_score"):
        callback.on_epoch_end(0, {"val_loss": 1.0})



def test_a_model_trained_by_fit_can_be_trained_again(tmp_path):
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
    y = x.sum(axis=1, keepdims=True)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model()
    train.fit(model, data, data, tmp_path, epochs=1, monitor="val_loss", mode="min", tensorboard=False, progress=False)
    history = model.fit(x, y, epochs=1, verbose=0)  # tf-keras' BackupAndRestore used to leave the model unusable
    assert np.isfinite(history.history["loss"][0])


def test_a_finished_run_is_not_trained_again(tmp_path):
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True))).batch(4)
    first = tiny_model()
    log = train.fit(first, data, data, tmp_path, epochs=2, monitor="val_loss", mode="min", tensorboard=False, progress=False)
    second = tiny_model()
    again = train.fit(second, data, data, tmp_path, epochs=2, monitor="val_loss", mode="min", tensorboard=False, progress=False)
    pd.testing.assert_frame_equal(again, log)  # no epoch appended
    assert int(second.optimizer.iterations) == 0  # nothing trained
    for trained, loaded in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(trained, loaded)  # the last weights came back
    with pytest.raises(ValueError, match="finished run of 2 epochs, not 3"):
        train.fit(tiny_model(), data, data, tmp_path, epochs=3, monitor="val_loss", mode="min", tensorboard=False, progress=False)

TRAIN_SCRIPT = """
import os, sys
import numpy as np
from helpers import train
from helpers.backend import keras, tf

run_dir, kill_after = sys.argv[1], int(sys.argv[2])
train.set_seed(0)
x = np.linspace(-1, 1, 64 * 4, dtype="float32").reshape(64, 4)
y = x.sum(axis=1, keepdims=True)
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(train.WarmupCosine(0.05, total_steps=6 * 8, warmup_steps=8)), loss="mse")

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == kill_after:
            os._exit(3)  # as abrupt as a killed process

train.fit(model, data, data, run_dir, epochs=6, monitor="val_loss", mode="min", tensorboard=False,
          progress=False, extra_callbacks=[Kill()])
print("iterations", int(model.optimizer.iterations))
"""


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_training_resumes_after_a_kill_without_losing_epochs(tmp_path):
    killed = run_script(TRAIN_SCRIPT, str(tmp_path), "2")
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert list(train.read_log(tmp_path)["epoch"]) == [0, 1, 2]
    resumed = run_script(TRAIN_SCRIPT, str(tmp_path), "-1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = train.read_log(tmp_path)
    assert list(log["epoch"]) == [0, 1, 2, 3, 4, 5]
    assert "iterations 48" in resumed.stdout  # 6 epochs x 8 steps: the optimiser state came back too
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    assert (log["epoch_seconds"] > 0).all()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best"] == pytest.approx(log["val_loss"].min())
    assert not (tmp_path / "backup").exists()


MIRROR_SCRIPT = """
from helpers.backend import keras, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from helpers import train
strategy = train.get_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
x = np.ones((16, 4), "float32")
history = model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
print("replicas", strategy.num_replicas_in_sync, "loss", history.history["loss"][0])
"""


def test_mirrored_strategy_on_two_logical_cpus():
    result = run_script(MIRROR_SCRIPT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2" in result.stdout


def test_precision_policy_choices():
    assert train.configure_precision("auto") == "float32"  # no GPU in the test environment
    with pytest.raises(ValueError, match="must be one of"):
        train.configure_precision("half")
    keras.mixed_precision.set_global_policy("float32")
