"""Training loop: schedule, persistent best state, resume after a SIGKILL at every commit point, two-device mirroring.

Several workers (MultiWorkerMirroredStrategy): tests/test_distributed.py."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from helpers.modeling import train
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


def tiny_data():
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
    return tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True))).batch(4)


def test_run_checkpoint_keeps_state_across_instances(tmp_path):
    model = tiny_model()
    first = train.RunCheckpoint(tmp_path, monitor="val_loss", mode="min", patience=2)
    first.set_model(model)
    for epoch, value in enumerate([0.5, 0.3, 0.4]):
        first.on_epoch_end(epoch, {"val_loss": value})
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["epoch"], state["best_epoch"], state["checkpoint"]) == (2, 1, "resume/epoch-0002")
    assert (tmp_path / "best.weights.h5").is_file() and list(train.read_log(tmp_path)["epoch"]) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["epoch-0002.data-00000-of-00001", "epoch-0002.index"]
    assert not list(tmp_path.glob(".*"))  # every temporary renamed or removed
    resumed = train.RunCheckpoint(tmp_path, monitor="val_loss", mode="min", patience=2)
    resumed.set_model(model)
    assert resumed.state["best"] == pytest.approx(0.3) and resumed.state["wait"] == 1 and resumed.epochs_done == 3
    resumed.on_epoch_end(3, {"val_loss": 0.35})  # second epoch without gain -> stop
    assert model.stop_training is True and resumed.stopped
    with pytest.raises(ValueError, match="epoch 3 is already committed"):
        resumed.on_epoch_end(3, {"val_loss": 0.1})
    assert list(train.read_log(tmp_path)["epoch"]) == [0, 1, 2, 3]


def test_run_checkpoint_names_a_missing_monitor(tmp_path):
    callback = train.RunCheckpoint(tmp_path, monitor="val_score")
    callback.set_model(tiny_model())
    with pytest.raises(ValueError, match="val_score"):
        callback.on_epoch_end(0, {"val_loss": 1.0})
    assert not (tmp_path / "state.json").exists()


def test_a_garbled_state_json_is_named(tmp_path):
    train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=2, monitor="val_loss", mode="min",
              tensorboard=False, progress=False)
    (tmp_path / "finished.json").unlink()  # as if killed before the finish
    text = (tmp_path / "state.json").read_text()
    (tmp_path / "state.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"state\.json line \d+: not valid JSON"):
        train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=2, monitor="val_loss", mode="min",
                  tensorboard=False, progress=False)


def test_a_resumed_run_keeps_its_monitor(tmp_path):
    first = train.RunCheckpoint(tmp_path, monitor="val_loss", mode="min")
    first.set_model(tiny_model())
    first.on_epoch_end(0, {"val_loss": 1.0})
    with pytest.raises(ValueError, match="monitor='val_loss', mode='min'"):
        train.RunCheckpoint(tmp_path, monitor="val_loss", mode="max")


def test_an_unfinished_run_of_the_old_layout_is_refused(tmp_path):
    (tmp_path / "backup").mkdir()  # Keras' BackupAndRestore, used before
    old_state = {"best": 0.5, "best_epoch": 0, "wait": 0, "monitor": "val_loss", "mode": "min"}
    (tmp_path / "state.json").write_text(json.dumps(old_state))
    (tmp_path / "log.csv").write_text("epoch,loss,val_loss\n0,1.0,0.5\n")
    with pytest.raises(ValueError, match="older helpers.modeling.train"):
        train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=2, monitor="val_loss", mode="min",
                  tensorboard=False, progress=False)
    (tmp_path / "backup").rmdir()
    with pytest.raises(ValueError, match="not a training state"):
        train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=2, monitor="val_loss", mode="min",
                  tensorboard=False, progress=False)
    assert (tmp_path / "log.csv").read_text() == "epoch,loss,val_loss\n0,1.0,0.5\n"  # untouched


def test_an_early_stopped_run_is_not_trained_further_after_a_crash(tmp_path, monkeypatch):
    class Flat(keras.callbacks.Callback):  # a score that never improves after epoch 0
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = 1.0

    save_weights = keras.Model.save_weights

    def crash(model, path, *args, **kwargs):  # interrupted while writing the last weights
        if "last" in Path(path).name:
            raise RuntimeError("interrupted before the finish")
        return save_weights(model, path, *args, **kwargs)

    options = dict(monitor="val_score", mode="max", patience=1, tensorboard=False, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save_weights", crash)
        with pytest.raises(RuntimeError, match="before the finish"):
            train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=5, scorers=[Flat()], **options)
    log = train.fit(tiny_model(), tiny_data(), tiny_data(), tmp_path, epochs=5, scorers=[Flat()], **options)
    assert list(log["epoch"]) == [0, 1]  # stopped after epoch 1 and stays stopped
    assert json.loads((tmp_path / "finished.json").read_text()) == {"epochs": 5}


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
from helpers.modeling import train
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


@pytest.mark.slow  # in the full suite, not the fast tier
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
    assert not (tmp_path / "resume").exists()  # finished: the training state is dropped


# A tiny deterministic training (3 epochs of 2 unshuffled batches) that SIGKILLs itself at one point
# of the epoch commit or of the finish; rerun with point "none" it resumes (or trains from scratch).
KILL_EPOCHS, KILL_EPOCH = 3, 1
KILL_SCRIPT = f"""
import glob, os, pathlib, signal, sys
import numpy as np
from helpers.modeling import train
from helpers.backend import keras, tf

run_dir, point = sys.argv[1], sys.argv[2]
train.set_seed(0, deterministic_ops=True)
x = np.linspace(-1, 1, 16 * 4, dtype="float32").reshape(16, 4)
y = np.sin(3 * x).sum(axis=1, keepdims=True)
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(train.WarmupCosine(0.05, total_steps={KILL_EPOCHS} * 2, warmup_steps=2)),
              loss="mse")
now = [-1]

class Epoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        now[0] = epoch

def die(*torn):
    for path in torn:  # what a kill in mid-write leaves behind: the first half of the file
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

def hook(owner, name, wrapper):
    original = getattr(owner, name)
    setattr(owner, name, lambda *a, **k: wrapper(original, *a, **k))

in_epoch = lambda: now[0] == {KILL_EPOCH}
named = lambda path, *names: pathlib.Path(path).name in names

def training_state(original, self, prefix, *a, **k):  # tf.train.Checkpoint._write (BackupAndRestore too)
    result = original(self, prefix, *a, **k)
    if in_epoch() and point == "during-state-save":
        die(*glob.glob(str(prefix) + ".*"))
    if in_epoch() and point == "after-state-save":
        die()
    return result

def weights(original, self, path, *a, **k):  # keras.Model.save_weights
    result = original(self, path, *a, **k)
    if in_epoch() and point == "after-best" and "best" in pathlib.Path(path).name:
        die()
    if point == "during-last" and "last" in pathlib.Path(path).name:
        die(path)
    return result

def replace(original, src, dst):  # os.replace
    if in_epoch() and point == "before-state-commit" and named(dst, "state.json"):
        die()
    if point == "during-finished" and named(dst, "finished.json"):
        die(src)
    original(src, dst)
    if in_epoch() and point == "after-state-commit" and named(dst, "state.json"):
        die()
    if in_epoch() and point == "between-renames" and named(dst, "best.weights.h5"):
        die()

def write_text(original, self, text, *a, **k):  # pathlib.Path.write_text (the finished marker of old)
    if point == "during-finished" and self.name == "finished.json":
        original(self, text[: len(text) // 2], *a, **k)
        die()
    return original(self, text, *a, **k)

hook(tf.train.Checkpoint, "_write", training_state)
hook(keras.Model, "save_weights", weights)
hook(os, "replace", replace)
hook(pathlib.Path, "write_text", write_text)
train.fit(model, data, data, run_dir, epochs={KILL_EPOCHS}, monitor="val_loss", mode="min", tensorboard=False,
          progress=False, scorers=[Epoch()])
"""
KILL_POINTS = ["during-state-save", "after-state-save", "after-best", "before-state-commit", "after-state-commit",
               "between-renames", "during-last", "during-finished"]
CHILD_ENV = os.environ | {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def h5_arrays(path: Path) -> dict:
    """Every dataset of an HDF5 file by name."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def run_kill_script(run_dir: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(run_dir), point], capture_output=True, text=True,
                          cwd=ROOT, env=CHILD_ENV, timeout=180)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """``point -> (killed, resumed, run_dir)`` for every kill point, and ``"reference"``: one uninterrupted run."""
    root = tmp_path_factory.mktemp("kills")

    def one(point):
        run_dir = root / point
        killed = run_kill_script(run_dir, point) if point != "reference" else None
        return point, (killed, run_kill_script(run_dir, "none"), run_dir)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: each child is mostly TensorFlow's import
        return dict(pool.map(one, ["reference", *KILL_POINTS]))


@pytest.mark.parametrize("point", KILL_POINTS)
@pytest.mark.slow  # in the full suite, not the fast tier
def test_a_sigkill_at_any_commit_point_loses_and_duplicates_no_epoch(point, killed_runs):
    _, reference, ref_dir = killed_runs["reference"]
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_log = train.read_log(ref_dir)
    assert list(ref_log["epoch"]) == list(range(KILL_EPOCHS))
    assert ref_log["val_loss"].is_monotonic_decreasing  # each epoch improves: the best weights are saved every epoch
    killed, resumed, run_dir = killed_runs[point]
    assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: rc {killed.returncode}\n{killed.stderr[-3000:]}"
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = train.read_log(run_dir)
    assert list(log["epoch"]) == list(range(KILL_EPOCHS))  # no epoch lost, none twice
    pd.testing.assert_frame_equal(log.drop(columns="epoch_seconds"), ref_log.drop(columns="epoch_seconds"))
    state, ref_state = json.loads((run_dir / "state.json").read_text()), json.loads((ref_dir / "state.json").read_text())
    assert (state["best"], state["best_epoch"]) == (ref_state["best"], ref_state["best_epoch"])
    assert json.loads((run_dir / "finished.json").read_text()) == {"epochs": KILL_EPOCHS}
    for name in ("last.weights.h5", "best.weights.h5"):  # bitwise: deterministic ops, and the optimiser state came back
        got, want = h5_arrays(run_dir / name), h5_arrays(ref_dir / name)
        want = {key: value for key, value in want.items() if not key.startswith("metrics/")}  # none until a step ran
        assert want.keys() <= got.keys() and all(np.array_equal(got[key], want[key]) for key in want), name
    leftovers = sorted(p.name for p in run_dir.iterdir())
    assert leftovers == sorted(p.name for p in ref_dir.iterdir()), "temporary files left behind"


MIRROR_SCRIPT = """
from helpers.backend import keras, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from helpers.modeling import train
strategy = train.get_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
x = np.ones((16, 4), "float32")
history = model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
print("replicas", strategy.num_replicas_in_sync, "loss", history.history["loss"][0])
import sys, tempfile
path = tempfile.mkdtemp() + "/m.weights.h5"
model.save_weights(path)
trained = model.get_weights()
model.set_weights([np.zeros_like(w) for w in trained])
train.load_weights(model, path)  # Keras' own load_weights fails here on the loss tracker's summed per-replica variables
print("reloaded", all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained)))
"""


@pytest.mark.slow  # in the full suite, not the fast tier
def test_mirrored_strategy_on_two_logical_cpus():
    result = run_script(MIRROR_SCRIPT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2" in result.stdout
    assert "reloaded True" in result.stdout


def test_precision_policy_choices():
    assert train.configure_precision("auto") == "float32"  # no GPU in the test environment
    with pytest.raises(ValueError, match="must be one of"):
        train.configure_precision("half")
    keras.mixed_precision.set_global_policy("float32")


def test_device_summary_names_where_training_runs():
    summary = train.device_summary()
    if tf.config.list_physical_devices("GPU"):
        assert summary.startswith("GPU:0 ")
    else:
        assert summary == f"CPU ({os.cpu_count()} cores, no GPU visible)"


def test_the_train_step_is_traced_once(tmp_path):
    """Before: the optimiser's slots were made inside the first step, so TensorFlow traced it twice (1.6 s a fit)."""
    counts = []

    class TracingCount(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append(self.model.train_function.experimental_get_tracing_count())

    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    train.fit(model, tiny_data(), tiny_data(), tmp_path, epochs=2, monitor="val_loss", mode="min",
              tensorboard=False, progress=False, extra_callbacks=[TracingCount()])
    assert counts == [1] * len(counts) and len(counts) == 4


# ------------------------------------------------------------------ precision
def _tiny_classifier(filters: int = 4) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(filters, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


BATCH = (np.zeros((4, 8, 8, 1), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]])


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("flags, expected", [("fpu avx512f avx512_bf16 amx_tile", True), ("fpu sse avx2", False),
                                             ("fpu amx_bf16", True), (None, False)])
def test_cpu_bfloat16_support_comes_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert train.cpu_supports_bfloat16(cpuinfo) is expected


def test_an_explicit_precision_wins_and_is_not_probed(float32_after, monkeypatch):
    monkeypatch.setattr(train, "_training_rate", lambda *a, **k: pytest.fail("probed"))
    choice = train.choose_precision("mixed_bfloat16", _tiny_classifier, {}, BATCH, "categorical_crossentropy")
    assert choice == train.PrecisionChoice("mixed_bfloat16", "asked for")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    with pytest.raises(ValueError, match=r"precision policy must be one of \['auto', 'float32'"):
        train.choose_precision("bf16", _tiny_classifier, {}, BATCH, "mse")


@pytest.mark.parametrize("bf16_rate, expected", [(25.0, "mixed_bfloat16"), (11.0, "float32"), (5.0, "float32")])
def test_auto_keeps_bfloat16_only_where_the_probe_measures_it_faster(float32_after, monkeypatch, bf16_rate, expected):
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda: True)
    measured = iter([10.0, bf16_rate])
    monkeypatch.setattr(train, "_training_rate", lambda *a, **k: next(measured))
    choice = train.choose_precision("auto", _tiny_classifier, {}, BATCH, "mse")
    assert choice.policy == expected == keras.mixed_precision.global_policy().name
    assert choice.rates == {"float32": 10.0, "mixed_bfloat16": bf16_rate} and "probe" in choice.reason
    assert choice.record()["precision_rates"] == choice.rates


def test_auto_without_bfloat16_support_is_float32_without_a_probe(float32_after, monkeypatch):
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda: False)
    monkeypatch.setattr(train, "_training_rate", lambda *a, **k: pytest.fail("probed"))
    choice = train.choose_precision("auto", _tiny_classifier, {}, BATCH, "mse")
    assert (choice.policy, choice.rates) == ("float32", {}) and "no bfloat16" in choice.reason


@pytest.mark.parametrize("planned, probed", [(40, False), (99, False), (100, True), (None, True)])
def test_auto_probes_only_runs_long_enough_to_repay_the_probe(float32_after, monkeypatch, planned, probed):
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda: True)
    measured = iter([10.0, 25.0])
    monkeypatch.setattr(train, "_training_rate", lambda *a, **k: next(measured))
    choice = train.choose_precision("auto", _tiny_classifier, {}, BATCH, "mse", planned_steps=planned)
    assert choice.policy == ("mixed_bfloat16" if probed else "float32")
    assert bool(choice.rates) is probed and ("too few" in choice.reason) is not probed


def _counted_batches(counter: list) -> "tf.data.Dataset":
    def batches():
        counter.append(1)
        yield BATCH

    spec = (tf.TensorSpec((4, 8, 8, 1), tf.float32), tf.TensorSpec((4, 2), tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=spec)


@pytest.mark.parametrize("planned, iterations", [(10, 0), (None, 1)])
def test_the_training_data_is_read_only_when_the_probe_runs(float32_after, monkeypatch, planned, iterations):
    # reading a batch starts an iteration, which moves a seeded shuffle and augmentation stream on:
    # a run that is not probed must train on exactly the batches it would have had without the probe
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda: True)
    measured = iter([10.0, 25.0])
    monkeypatch.setattr(train, "_training_rate", lambda build, settings, batch, loss, steps: next(measured))
    counter = []
    train.choose_precision("auto", _tiny_classifier, {}, _counted_batches(counter), "mse", planned_steps=planned)
    assert len(counter) == iterations


def test_planned_steps_must_be_positive():
    with pytest.raises(ValueError, match="planned_steps"):
        train.choose_precision("float32", _tiny_classifier, {}, BATCH, "mse", planned_steps=0)


def test_the_probe_trains_the_model_under_both_policies(float32_after, monkeypatch):
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda: True)
    choice = train.choose_precision("auto", _tiny_classifier, {"filters": 2}, BATCH, "categorical_crossentropy", steps=1)
    assert set(choice.rates) == {"float32", "mixed_bfloat16"} and min(choice.rates.values()) > 0
    assert keras.mixed_precision.global_policy().name == choice.policy
