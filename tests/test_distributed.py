"""Several workers: TF_CONFIG checks, the chief's folders, and two worker processes on 127.0.0.1 (CPU) training like one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data import pipeline
from helpers.modeling import distributed, train
from helpers.backend import keras, tf

ROOT = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 120  # per worker process; a hang fails the test instead of blocking it


def config(cluster: dict, kind: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


TWO_WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
CHIEF_AND_WORKER = {"chief": ["127.0.0.1:2222"], "worker": ["127.0.0.1:2223"]}

# (TF_CONFIG text, expected (tasks, is chief) or the ValueError's message)
TF_CONFIG_CASES = {
    "single worker": (config({"worker": ["127.0.0.1:2222"]}, "worker", 0), (1, True)),
    "two workers, first": (config(TWO_WORKERS, "worker", 0), (2, True)),
    "two workers, second": (config(TWO_WORKERS, "worker", 1), (2, False)),
    "chief + worker, the chief": (config(CHIEF_AND_WORKER, "chief", 0), (2, True)),
    "chief + worker, worker 0": (config(CHIEF_AND_WORKER, "worker", 0), (2, False)),
    "malformed JSON": ('{"cluster": {"worker": ["127.0.0.1:2222"]}', r"TF_CONFIG must be JSON"),
    "not an object": ('["127.0.0.1:2222"]', r"TF_CONFIG must be a JSON object"),
    "missing task": (json.dumps({"cluster": TWO_WORKERS}), r"TF_CONFIG\['task'\] is missing"),
    "index out of range": (config(TWO_WORKERS, "worker", 2), r"TF_CONFIG\['task'\]\['index'\] must be an integer in 0\.\.1, got 2"),
    "index not an integer": (config(TWO_WORKERS, "worker", "1"), r"TF_CONFIG\['task'\]\['index'\] must be an integer"),
    "type not in the cluster": (config(TWO_WORKERS, "chief", 0), r"TF_CONFIG\['task'\]\['type'\] must be one of \['worker'\]"),
    "unsupported task type": (config({"ps": ["127.0.0.1:2222"]}, "ps", 0), r"task type must be one of \['chief', 'worker'\]"),
    "address without a port": (config({"worker": ["127.0.0.1"]}, "worker", 0), r"TF_CONFIG\['cluster'\]\['worker'\]\[0\] must be 'host:port'"),
    "empty cluster": (json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}), r"TF_CONFIG\['cluster'\] must be"),
    "two chiefs": (config({"chief": ["a:1", "b:2"]}, "chief", 0), r"TF_CONFIG\['cluster'\]\['chief'\] must hold one address"),
}


@pytest.mark.parametrize("text, expected", TF_CONFIG_CASES.values(), ids=TF_CONFIG_CASES.keys())
def test_tf_config_is_checked_field_by_field(text, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            distributed.read_tf_config(text)
        return
    parsed = distributed.read_tf_config(text)
    assert (distributed.n_tasks(parsed), distributed.is_chief(parsed)) == expected
    assert distributed.cluster_spec(parsed) == json.loads(text)["cluster"]


def test_without_tf_config_one_process_is_its_own_chief(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distributed.read_tf_config() is None and distributed.read_tf_config("  ") is None
    assert (distributed.cluster_spec(), distributed.n_tasks(), distributed.is_chief()) == ({}, 1, True)
    assert distributed.worker_run_dir(tmp_path) == tmp_path
    assert not distributed.is_multi_worker(tf.distribute.get_strategy())
    assert distributed.gather(tf.distribute.get_strategy(), [1, 2]).tolist() == [[1.0, 2.0]]
    assert distributed.chief_value(tf.distribute.get_strategy(), 0.5) == 0.5


@pytest.mark.parametrize("text, expected", [(config(TWO_WORKERS, "worker", 0), "."),
                                            (config(TWO_WORKERS, "worker", 1), ".workers/worker-1"),
                                            (config(CHIEF_AND_WORKER, "chief", 0), "."),
                                            (config(CHIEF_AND_WORKER, "worker", 0), ".workers/worker-0")])
def test_only_the_chief_writes_the_real_folder_and_the_others_clean_up(text, expected, monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", text)
    run_dir = tmp_path / "run"
    folder = distributed.worker_run_dir(run_dir)
    assert folder == (run_dir if expected == "." else run_dir / expected)
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "a.png").write_bytes(b"png")
    distributed.remove_worker_dir(run_dir)
    if expected == ".":
        assert (run_dir / "figures" / "a.png").is_file()  # the chief's outputs stay
    else:
        assert sorted(p.name for p in run_dir.iterdir()) == []  # the worker's folder and the empty .workers are gone


def test_get_strategy_is_the_default_one_for_a_cluster_of_one_and_refuses_a_malformed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", config({"worker": ["127.0.0.1:2222"]}, "worker", 0))
    if len(tf.config.list_logical_devices("GPU")) < 2:
        assert train.get_strategy() is tf.distribute.get_strategy()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": ')
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        train.get_strategy()
    monkeypatch.setenv("TF_CONFIG", config(TWO_WORKERS, "worker", 1))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=distributed.TIMEOUT_ENV):  # checked before any strategy is made
        train.get_strategy()


def test_a_cluster_strategy_made_after_tensorflow_ran_says_to_make_it_first(monkeypatch):
    float(tf.constant(1.0) + 1.0)  # this process has run TensorFlow: collectives can no longer be configured
    monkeypatch.setenv("TF_CONFIG", config(TWO_WORKERS, "worker", 1))
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    with pytest.raises(RuntimeError, match=r"call train.get_strategy\(\) first, before any TensorFlow work"):
        train.get_strategy()


def test_fit_refuses_a_model_built_outside_the_strategy_of_a_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", config(TWO_WORKERS, "worker", 0))
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((4, 4), "float32"), np.ones((4, 1), "float32"))).batch(2)
    with pytest.raises(ValueError, match=r"train.get_strategy\(\).scope\(\)"):
        train.fit(model, data, data, tmp_path, epochs=1, monitor="val_loss", mode="min", progress=False)
    assert not (tmp_path / "state.json").exists()


def test_auto_precision_does_not_probe_across_workers(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", config(TWO_WORKERS, "worker", 1))
    monkeypatch.setattr(train, "cpu_supports_bfloat16", lambda *a: True)
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])

    def no_probe(**settings):
        raise AssertionError("probed")

    choice = train.choose_precision("auto", no_probe, {}, (np.zeros((2, 8, 8, 1)), np.zeros((2, 2))), "mse", planned_steps=1000)
    assert choice.policy == "float32" and "2 workers" in choice.reason
    keras.mixed_precision.set_global_policy("float32")


def test_range_pipelines_are_sharded_by_data_and_file_readers_keep_auto(tmp_path):
    policy = tf.data.experimental.AutoShardPolicy
    batches = pipeline.Batching(4, training=True, seed=0).graph_batches(lambda item, draw: (item, draw), 8)
    assert distributed.with_data_sharding(batches).options().experimental_distribute.auto_shard_policy == policy.DATA
    assert not distributed.reads_files(batches)
    with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecord")) as writer:
        writer.write(b"record")
    records = tf.data.TFRecordDataset([str(tmp_path / "a.tfrecord")]).map(tf.strings.length).batch(2)
    assert distributed.reads_files(records)
    assert distributed.with_data_sharding(records).options().experimental_distribute.auto_shard_policy == policy.AUTO
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.OFF
    chosen = batches.with_options(options)
    assert distributed.with_data_sharding(chosen).options().experimental_distribute.auto_shard_policy == policy.OFF


# ------------------------------------------------------------------ two worker processes on 127.0.0.1
# Every process runs this script: train.fit of a tiny model, plain SGD with momentum, on a fixed
# 32-row dataset through the project's pipeline (Dataset.range shuffled and zipped with
# Dataset.random), global batch 8. The frozen BatchNormalization keeps the model deterministic
# while its statistics make every save a collective. argv: run_dir, weights.npy, epochs, the epoch
# after whose commit the process exits with 3 (-1: none), a file written after the first step
# ("-": none), seconds to sleep after each step.
WORKER_SCRIPT = """
import os, sys, time
from pathlib import Path
import numpy as np
from helpers.data import pipeline
from helpers.modeling import train
from helpers.backend import keras, tf

run_dir, weights, epochs, exit_after, flag, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
strategy = train.get_strategy()
train.set_seed(0)
x = tf.constant(np.linspace(-1, 1, 32 * 4, dtype="float32").reshape(32, 4))
y = tf.reduce_sum(tf.sin(3 * x), axis=1, keepdims=True)
train_data = pipeline.Batching(8, training=True, seed=0).graph_batches(
    lambda i, draw: (tf.gather(x, i) + 0.01 * tf.cast(draw % 7, tf.float32), tf.gather(y, i)), 32)
val_data = pipeline.Batching(6, training=False).graph_batches(lambda i, draw: (tf.gather(x, i), tf.gather(y, i)), 32)
with strategy.scope():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.BatchNormalization(trainable=False), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")

class Script(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if flag != "-" and not os.path.exists(flag):
            open(flag, "w").close()
        time.sleep(pause)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == exit_after:
            os._exit(3)  # as abrupt as a kill, after the epoch's commit

print("replicas", strategy.num_replicas_in_sync, flush=True)
train.fit(model, train_data, val_data, run_dir, epochs=epochs, monitor="val_loss", mode="min", progress=False,
          extra_callbacks=[Script()])
np.save(weights, np.concatenate([v.numpy().ravel() for v in model.weights]))
model.set_weights([np.zeros_like(w) for w in model.get_weights()])
train.load_weights(model, Path(run_dir) / "best.weights.h5")  # under the strategy: Keras' own load_weights fails there
np.save(weights.replace(".npy", "-best.npy"), np.concatenate([v.numpy().ravel() for v in model.weights]))
print("trained", flush=True)
"""
EPOCHS = 3


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(tf_config: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", distributed.TIMEOUT_ENV)}
    env |= {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return env | ({"TF_CONFIG": tf_config} if tf_config else {})


class Processes:
    """Worker processes of one test, output to files; every one is killed on exit, finished or not."""

    def __init__(self, folder: Path):
        self.folder, self.procs = folder, []
        self.script = folder / "worker.py"
        self.script.write_text(WORKER_SCRIPT)

    def start(self, name: str, args: list, tf_config: str | None) -> subprocess.Popen:
        out = open(self.folder / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, str(self.script), *map(str, args)], cwd=ROOT, env=child_env(tf_config),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.name, proc.out = name, out
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen, timeout: float = PROCESS_TIMEOUT_S) -> tuple[int, str]:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        proc.out.close()
        text = (self.folder / f"{proc.name}.log").read_text(errors="replace")
        assert code is not None, f"{proc.name} still running after {timeout} s:\n{text[-3000:]}"
        return code, text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL: a worker waiting for its peers ignores SIGTERM
                proc.wait(timeout=30)
            proc.out.close()


def cluster(ports: list[int], chief: bool) -> list[str]:
    """Each task's TF_CONFIG: a chief and a worker, or two workers (worker 0 is then the chief)."""
    addresses = [f"127.0.0.1:{port}" for port in ports]
    if chief:
        spec = {"chief": addresses[:1], "worker": addresses[1:]}
        return [config(spec, "chief", 0)] + [config(spec, "worker", i) for i in range(len(addresses) - 1)]
    return [config({"worker": addresses}, "worker", i) for i in range(len(addresses))]


def run_pair(procs: Processes, name: str, run_dirs: list[Path], args: list) -> list[tuple[int, str]]:
    """Chief and worker running the script together (``run_dirs``: each one's ``run_dir``); their exit codes and output."""
    started = [procs.start(f"{name}-{k}", [run_dir, procs.folder / f"{name}-{k}.npy", *args], tf_config)
               for k, (run_dir, tf_config) in enumerate(zip(run_dirs, cluster(free_ports(2), chief=True)))]
    return [procs.wait(proc) for proc in started]


def weights(procs: Processes, name: str) -> np.ndarray:
    return np.load(procs.folder / f"{name}.npy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One process, then a chief and a worker, each trained uninterrupted and killed after epoch 1 then resumed."""
    folder = tmp_path_factory.mktemp("workers")
    result = {"folder": folder, "seconds": {}}
    with Processes(folder) as procs:
        for name, kills in (("single", False), ("single-resumed", True)):
            run_dir = folder / name
            if kills:
                result[f"{name}-killed"] = procs.wait(procs.start(f"{name}-killed", [run_dir, folder / "x.npy", EPOCHS, 1, "-", 0], None))
            started = time.perf_counter()
            result[name] = procs.wait(procs.start(name, [run_dir, folder / f"{name}.npy", EPOCHS, -1, "-", 0], None))
            result["seconds"][name] = time.perf_counter() - started
        for name, kills in (("pair", False), ("pair-resumed", True)):
            run_dir = folder / name
            if kills:
                result[f"{name}-killed"] = run_pair(procs, f"{name}-killed", [run_dir] * 2, [EPOCHS, 1, "-", 0])
                result[f"{name}-killed-files"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                                                        if "tensorboard" not in p.parts)
            started = time.perf_counter()
            result[name] = run_pair(procs, name, [run_dir] * 2, [EPOCHS, -1, "-", 0])
            result["seconds"][name] = time.perf_counter() - started
        names = ["single", "single-resumed", *(f"{name}-{k}" for name in ("pair", "pair-resumed") for k in (0, 1))]
        result["weights"] = {name: weights(procs, name) for name in names}
        result["weights"] |= {f"{name}-best": weights(procs, f"{name}-best") for name in names}
    return result


def assert_ran(outcomes, expected_code: int = 0):
    for code, text in outcomes if isinstance(outcomes, list) else [outcomes]:
        assert code == expected_code, text[-4000:]


@pytest.mark.slow  # in the full suite, not the fast tier (two TensorFlow processes start per run: ~30 s here)
def test_two_workers_end_with_the_same_weights_as_one_process(trained):
    assert_ran(trained["single"])
    assert_ran(trained["pair"])
    assert "replicas 2" in trained["pair"][0][1] and "replicas 1" in trained["single"][1]
    chief, worker, single = (trained["weights"][k] for k in ("pair-0", "pair-1", "single"))
    assert np.array_equal(chief, worker)  # kept in sync, bit for bit
    difference = float(np.abs(chief - single).max())
    print(f"two workers vs one process: max |weight difference| {difference:.2e}; seconds {trained['seconds']}")
    np.testing.assert_allclose(chief, single, rtol=0, atol=1e-5)
    best = [trained["weights"][f"{k}-best"] for k in ("pair-0", "pair-1", "single")]  # read back under the strategy
    assert np.array_equal(best[0], best[1]) and np.array_equal(best[0], chief)  # the last epoch is the best here
    np.testing.assert_allclose(best[0], best[2], rtol=0, atol=1e-5)
    if distributed.convolution_misshapes_empty_batches():  # TensorFlow's oneDNN bug on this CPU: every worker says so
        assert all("TF_ENABLE_ONEDNN_OPTS=0" in text for _, text in trained["pair"])
    log, single_log = train.read_log(trained["folder"] / "pair"), train.read_log(trained["folder"] / "single")
    pd.testing.assert_frame_equal(log.drop(columns="epoch_seconds"), single_log.drop(columns="epoch_seconds"), atol=1e-5)


@pytest.mark.slow  # in the full suite, not the fast tier
def test_only_the_chief_run_folder_holds_the_run_and_the_worker_folder_is_gone(trained):
    assert_ran(trained["pair"])
    run_dir, single_dir = trained["folder"] / "pair", trained["folder"] / "single"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
    assert not (run_dir / distributed.WORKERS_DIR).exists()
    assert json.loads((run_dir / "finished.json").read_text()) == {"epochs": EPOCHS}
    assert list(train.read_log(run_dir)["epoch"]) == list(range(EPOCHS))
    assert sorted(p.name for p in (run_dir / "tensorboard").iterdir()) == ["train", "validation"]  # the chief's only


@pytest.mark.slow  # in the full suite, not the fast tier
def test_two_workers_resume_from_the_chief_folder_like_one_process(trained):
    assert_ran(trained["single-resumed-killed"], expected_code=3)
    assert_ran(trained["pair-resumed-killed"], expected_code=3)
    left = trained["pair-resumed-killed-files"]  # after the kill: epochs 0-1 committed by the chief, and the worker's copy
    assert {"state.json", "log.csv", "best.weights.h5", ".workers/chief.json", ".workers/worker-0/state.json"} <= set(left)
    assert_ran(trained["single-resumed"])
    assert_ran(trained["pair-resumed"])
    run_dir = trained["folder"] / "pair-resumed"
    assert list(train.read_log(run_dir)["epoch"]) == list(range(EPOCHS)) and not (run_dir / distributed.WORKERS_DIR).exists()
    chief, worker, single = (trained["weights"][k] for k in ("pair-resumed-0", "pair-resumed-1", "single-resumed"))
    assert np.array_equal(chief, worker)
    np.testing.assert_allclose(chief, single, rtol=0, atol=1e-5)
    best = [trained["weights"][f"{k}-best"] for k in ("pair-resumed-0", "pair-resumed-1", "single-resumed")]
    assert np.array_equal(best[0], best[1]) and not np.allclose(best[0], chief)  # epoch 0 was the best
    np.testing.assert_allclose(best[0], best[2], rtol=0, atol=1e-5)
    assert not np.allclose(single, trained["weights"]["single"])  # a resumed run reshuffles from the first order, on one machine too
    pd.testing.assert_frame_equal(train.read_log(run_dir).drop(columns="epoch_seconds"),
                                  train.read_log(trained["folder"] / "single-resumed").drop(columns="epoch_seconds"), atol=1e-5)


@pytest.mark.slow  # in the full suite, not the fast tier
def test_a_killed_worker_makes_the_survivor_fail_within_a_bounded_time(tmp_path):
    with Processes(tmp_path) as procs:
        flag = tmp_path / "first-step"
        configs = cluster(free_ports(2), chief=False)  # two workers: worker 0 is the chief
        survivor = procs.start("worker-0", [tmp_path / "run", tmp_path / "w0.npy", 200, -1, "-", 0.2], configs[0])
        victim = procs.start("worker-1", [tmp_path / "run", tmp_path / "w1.npy", 200, -1, flag, 0.2], configs[1])
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not flag.exists():
            assert time.monotonic() < deadline and survivor.poll() is None and victim.poll() is None, \
                (tmp_path / "worker-0.log").read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        code, text = procs.wait(survivor, timeout=90)
        seconds = time.monotonic() - killed
    print(f"the survivor failed {seconds:.1f} s after its peer was killed")
    assert code != 0 and "RuntimeError: multi-worker training lost a worker" in text, text[-4000:]
    assert "/job:worker/replica:0/task:1" in text.split("RuntimeError:")[-1]  # names the lost task
    assert "start them all again with the same command" in text
    assert seconds < 60


def test_workers_that_do_not_share_the_run_folder_are_refused(tmp_path):  # two processes, ~10 s: in the fast tier
    """As on two machines without shared storage: the worker's ``run_dir`` is not the chief's folder."""
    with Processes(tmp_path) as procs:
        outcomes = run_pair(procs, "apart", [tmp_path / "chief-disk" / "run", tmp_path / "worker-disk" / "run"], [1, -1, "-", 0])
    for code, text in outcomes:
        assert code != 0 and "does not see the chief's run folder" in text, text[-3000:]
    assert not (tmp_path / "chief-disk" / "run" / "state.json").exists()


# Both workers run the transfer sweep of 06 (classification, 2 folds, 1 epoch) on 12 tiny patches.
SWEEP_SCRIPT = """
import sys
import pandas as pd
from helpers.core import severstal
from helpers.studies import transfer

data_dir, out_dir, table = sys.argv[1], sys.argv[2], sys.argv[3]
wide = severstal.read_dataset(data_dir)
folds = pd.Series([(i // 3) % 2 for i in range(len(wide))], index=wide.index, name="fold")
recipe = transfer.FoldRecipe(backbone="mobilenet", image_size=(32, 32), epochs=1, batch_size=2, options={"alpha": 0.25})
scores, logs = transfer.cross_validate("classification", ["random"], data_dir, wide, folds, out_dir, recipe, progress=False)
scores.drop(columns=["train_seconds", "session_seconds"]).to_csv(table, index=False)
"""


def tiny_patches(root: Path) -> Path:
    """12 grey 32x32 patches, the even ones with a bright square defect (as tests/test_transfer.py's)."""
    from helpers.core import files, rle, severstal

    rows = {}
    for index in range(12):
        image = np.full((32, 32), 60 + 5 * (index % 3), np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        if index % 2 == 0:
            top, left = 4 + index, 6 + index // 2
            image[top:top + 6, left:left + 6] = 220
            mask[top:top + 6, left:left + 6] = 1
        files.write_image(root / "train_images" / f"p{index:02d}.png", image)
        rows[f"p{index:02d}.png"] = {1: rle.encode(mask)}
    wide = pd.DataFrame.from_dict(rows, orient="index")
    wide.index.name = "ImageId"
    severstal.write_train_csv(wide, root / "train.csv")
    severstal.write_classes(root, {1: "defect"})
    return root


@pytest.mark.slow  # in the full suite, not the fast tier
def test_a_transfer_sweep_on_two_workers_writes_its_runs_on_the_chief_only(tmp_path):
    data_dir, out_dir = tiny_patches(tmp_path / "patches"), tmp_path / "transfer"
    with Processes(tmp_path) as procs:
        procs.script.write_text(SWEEP_SCRIPT)
        started = [procs.start(f"sweep-{k}", [data_dir, out_dir, tmp_path / f"scores-{k}.csv"], tf_config)
                   for k, tf_config in enumerate(cluster(free_ports(2), chief=True))]
        outcomes = [procs.wait(proc, timeout=240) for proc in started]
    for code, text in outcomes:
        assert code == 0, text[-4000:]
    chief, worker = (pd.read_csv(tmp_path / f"scores-{k}.csv") for k in (0, 1))
    pd.testing.assert_frame_equal(chief, worker)  # the same models, scored alike on both
    assert sorted(chief["fold"]) == [0, 1]
    for fold in (0, 1):
        run = transfer_run(out_dir, fold)
        assert {"run.json", "recipe.json", "log.csv", "finished.json", "model.weights.h5"} <= {p.name for p in run.iterdir()}
    assert not list(out_dir.rglob(distributed.WORKERS_DIR))  # the worker's copies are gone


def transfer_run(out_dir: Path, fold: int) -> Path:
    from helpers.studies import transfer

    return transfer.run_path(out_dir, "classification", "random", 1.0, fold)
