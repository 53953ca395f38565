"""Several workers (machines) training one model: the cluster of ``TF_CONFIG``, its chief, and where each worker writes.

TensorFlow's multi-worker pattern (``tf.distribute.MultiWorkerMirroredStrategy``): every worker runs
the same program on its share of each global batch, and the variables stay equal because gradients
are summed across workers (collective all-reduce). Saving is collective too (BatchNorm statistics
are read across workers), so every worker saves at the same points: the chief into the real folder,
the others into a temporary folder of their own (:func:`worker_run_dir`: ``<folder>/.workers/<type>-<index>``),
removed when they are done (:func:`remove_worker_dir`). A single process (no ``TF_CONFIG``, or a
cluster of one) is its own chief and writes the real folder.

``TF_CONFIG`` is JSON, the same on every machine but for ``task``::

    {"cluster": {"chief": ["10.0.0.1:12345"], "worker": ["10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}

The chief is the task of type ``chief``, or ``worker`` 0 when the cluster has no chief.
:func:`read_tf_config` checks it (``ValueError`` naming the field); :func:`multi_worker_strategy` makes
the strategy, once per process and before TensorFlow has run anything there. A worker that dies is
detected by TensorFlow's coordination service (heartbeats; seconds): the others' next collective fails
with ``UnavailableError``. ``timeout_s`` (or ``DEFECT_COLLECTIVE_TIMEOUT``) also bounds every collective,
which catches a worker that hangs alive, at a price (see :func:`multi_worker_strategy`). Nothing happens
at import.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from helpers.core import checks
from helpers.backend import tf

__all__ = [
    "CONFIG_ENV",
    "CONTROL_TIMEOUT_S",
    "TASK_TYPES",
    "TIMEOUT_ENV",
    "WORKERS_DIR",
    "chief_value",
    "cluster_spec",
    "convolution_misshapes_empty_batches",
    "gather",
    "is_chief",
    "is_multi_worker",
    "multi_worker_strategy",
    "n_tasks",
    "read_tf_config",
    "reads_files",
    "remove_worker_dir",
    "task_of",
    "with_data_sharding",
    "worker_run_dir",
]

CONFIG_ENV = "TF_CONFIG"
TIMEOUT_ENV = "DEFECT_COLLECTIVE_TIMEOUT"  # seconds; unset or 0: collectives without a timeout
TASK_TYPES = ("chief", "worker")  # the task types of a MultiWorkerMirroredStrategy cluster
WORKERS_DIR = ".workers"  # inside a folder: the temporary folders of the workers other than the chief
CONTROL_TIMEOUT_S = 600.0  # bound on the collectives of :func:`gather` (barriers, agreements)
logger = logging.getLogger(__name__)

_FILE_READERS = ("TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset")  # what FILE sharding splits
# The one MultiWorkerMirroredStrategy of this process, made on first use: TensorFlow's collective runtime is
# per process, and a second strategy re-initialises it under the first (measured: "Delete called on non-empty
# BufRendezvous" on the next collective). The only module state of the package, and deliberate.
_PROCESS_STRATEGY: dict = {}


def read_tf_config(text: str | None = None) -> dict | None:
    """``TF_CONFIG`` (``text``, default the environment variable) checked: ``{"cluster": {type: [addresses]}, "task": {"type", "index"}}``.

    ``None`` when it is unset or blank. ``ValueError`` naming the field for malformed JSON, a missing
    or empty ``cluster``, a task type outside :data:`TASK_TYPES`, an address that is not ``host:port``,
    more than one chief, a missing ``task``, or an index outside the cluster.
    """
    text = os.environ.get(CONFIG_ENV) if text is None else text
    if text is None or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{CONFIG_ENV} must be JSON ({err}), got {text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_ENV} must be a JSON object with 'cluster' and 'task', got {text!r}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{CONFIG_ENV}['cluster'] must be an object of task type -> ['host:port', ...], got {cluster!r}")
    checked = {}
    for kind, addresses in cluster.items():
        checks.choice(f"{CONFIG_ENV}['cluster'] task type", kind, TASK_TYPES)
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"{CONFIG_ENV}['cluster']['{kind}'] must be a non-empty list of 'host:port', got {addresses!r}")
        for i, address in enumerate(addresses):
            _check_address(f"{CONFIG_ENV}['cluster']['{kind}'][{i}]", address)
        checked[kind] = list(addresses)
    if len(checked.get("chief", [])) > 1:
        raise ValueError(f"{CONFIG_ENV}['cluster']['chief'] must hold one address, got {checked['chief']!r}")
    task = config.get("task")
    if not isinstance(task, dict):
        raise ValueError(f"{CONFIG_ENV}['task'] is missing or not an object: it must name this machine's "
                         f"{{\"type\": one of {sorted(checked)}, \"index\": n}}, got {task!r}")
    kind = checks.choice(f"{CONFIG_ENV}['task']['type']", task.get("type"), sorted(checked))
    index = checks.integer(f"{CONFIG_ENV}['task']['index']", task.get("index"), 0, len(checked[kind]) - 1)
    return {"cluster": checked, "task": {"type": kind, "index": index}}


def _check_address(name: str, address: object) -> None:
    host, colon, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{name} must be 'host:port' (port 1..65535), got {address!r}")


def cluster_spec(tf_config: dict | None = None) -> dict[str, list[str]]:
    """The cluster of ``tf_config`` (default: ``TF_CONFIG`` read now): task type -> addresses; ``{}`` without one."""
    config = read_tf_config() if tf_config is None else tf_config
    return {kind: list(addresses) for kind, addresses in (config or {}).get("cluster", {}).items()}


def n_tasks(tf_config: dict | None = None) -> int:
    """Number of training processes of the cluster (chief and workers); 1 without ``TF_CONFIG``."""
    spec = cluster_spec(tf_config)
    return sum(len(addresses) for addresses in spec.values()) if spec else 1


def is_chief(tf_config: dict | None = None) -> bool:
    """Whether this task is the chief: type ``chief``, or ``worker`` 0 in a cluster without a chief; True without ``TF_CONFIG``."""
    config = read_tf_config() if tf_config is None else tf_config
    if config is None:
        return True
    kind, index = config["task"]["type"], config["task"]["index"]
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])


def multi_worker_strategy(timeout_s: float | None = None) -> tf.distribute.MultiWorkerMirroredStrategy:
    """``MultiWorkerMirroredStrategy`` over the cluster of ``TF_CONFIG`` (checked first), CPU or GPU collectives as available.

    Made once per process, before TensorFlow has run any operation (else ``RuntimeError``), and returned
    again on later calls (TensorFlow cannot re-initialise its collectives in a running process); a later call with another ``TF_CONFIG`` or timeout is a
    ``ValueError`` (restart the process). Blocks until every task of the cluster has started. ``timeout_s`` (default ``$DEFECT_COLLECTIVE_TIMEOUT``,
    unset: none) aborts any collective that waits longer (``DeadlineExceededError``), e.g. on a worker
    that hangs alive; a dead worker is caught without it, by the coordination service's heartbeats.
    TensorFlow keeps one sleeping thread per collective for ``timeout_s`` (measured here: 16 collectives
    per Keras training step, so ~16 x steps/s x ``timeout_s`` threads), hence no timeout by default.
    """
    config = read_tf_config()
    if config is None:
        raise ValueError(f"{CONFIG_ENV} is not set: a multi-worker strategy needs the cluster it names")
    if timeout_s is None and os.environ.get(TIMEOUT_ENV, "").strip():
        timeout_s = checks.number(TIMEOUT_ENV, os.environ[TIMEOUT_ENV], low=0.0)
    if timeout_s is not None:
        timeout_s = checks.number("timeout_s", timeout_s, low=0.0) or None  # 0: none
    key = (json.dumps(config, sort_keys=True), timeout_s)
    if _PROCESS_STRATEGY:
        if _PROCESS_STRATEGY["key"] != key:
            raise ValueError(f"this process already trains in the cluster {_PROCESS_STRATEGY['key'][0]} (timeout "
                             f"{_PROCESS_STRATEGY['key'][1]}): one per process; restart it to join another")
        return _PROCESS_STRATEGY["strategy"]
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise RuntimeError("TensorFlow has already run operations in this process, and a multi-worker strategy can only be "
                           "made before: call train.get_strategy() first, before any TensorFlow work (03 and 05 do it in "
                           "their first code cell)") from None
    _PROCESS_STRATEGY.update(key=key, strategy=strategy)
    if not tf.config.list_physical_devices("GPU") and convolution_misshapes_empty_batches():
        logger.warning("TensorFlow's CPU (oneDNN) convolution gives an empty batch the wrong shape here, and a worker gets an "
                       "empty batch when the last batch of an evaluation or prediction holds fewer images than there are "
                       "workers: a convolutional model then fails there. Set TF_ENABLE_ONEDNN_OPTS=0 on every machine "
                       "before starting (slower convolutions), or size batches and image counts to avoid such remainders.")
    return strategy


def convolution_misshapes_empty_batches() -> bool:
    """Whether a CPU convolution of an empty batch comes out with the input's channels (TensorFlow 2.21 with oneDNN: yes).

    Under a mirrored strategy a replica gets an empty batch when a final partial batch holds fewer
    elements than there are replicas; such a convolution then breaks the next layer (``scale must
    have the same number of elements as the channels of x``). ``TF_ENABLE_ONEDNN_OPTS=0`` avoids it.
    """
    with tf.device("/CPU:0"):
        out = tf.nn.conv2d(tf.zeros((0, 1, 1, 1)), tf.ones((1, 1, 1, 2)), strides=1, padding="VALID")
    return out.shape[-1] != 2


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans 2+ processes (a ``MultiWorkerMirroredStrategy`` over a cluster of several tasks)."""
    return task_of(strategy) is not None


def task_of(strategy: tf.distribute.Strategy) -> dict | None:
    """``strategy``'s cluster as a checked ``TF_CONFIG`` dict (:func:`read_tf_config`), or ``None`` on one process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    spec = {kind: list(addresses) for kind, addresses in resolver.cluster_spec().as_dict().items()}
    if sum(len(addresses) for addresses in spec.values()) < 2:
        return None
    return read_tf_config(json.dumps({"cluster": spec, "task": {"type": resolver.task_type, "index": resolver.task_id}}))


def worker_run_dir(run_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Where this worker writes what belongs in ``run_dir``: ``run_dir`` itself on the chief (and on one process),
    ``run_dir/.workers/<type>-<index>`` on the other workers. ``strategy=None``: the task of ``TF_CONFIG``."""
    run_dir = Path(run_dir)
    config = read_tf_config() if strategy is None else task_of(strategy)
    if config is None or is_chief(config):
        return run_dir
    return run_dir / WORKERS_DIR / f"{config['task']['type']}-{config['task']['index']}"


def remove_worker_dir(run_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> None:
    """Delete this worker's temporary folder of ``run_dir`` (:func:`worker_run_dir`), and ``.workers`` once empty; nothing on the chief."""
    run_dir = Path(run_dir)
    folder = worker_run_dir(run_dir, strategy)
    if folder == run_dir:
        return
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # only when no other worker's folder is left in it
    except OSError:
        pass


def gather(strategy: tf.distribute.Strategy, values: Sequence[float], timeout_s: float = CONTROL_TIMEOUT_S) -> np.ndarray:
    """Every replica's ``values`` (k numbers, the same k everywhere): ``(n_replicas, k)`` float64, on every worker.

    A collective, so also a barrier: it returns once every worker has called it (or raises after
    ``timeout_s``). On one process: ``values`` as one row.
    """
    row = np.asarray(values, np.float64).reshape(1, -1)
    if not is_multi_worker(strategy):
        return row
    gathered = _all_gather(strategy, tf.constant(row), float(timeout_s))
    return strategy.experimental_local_results(gathered)[0].numpy()


@tf.function(reduce_retracing=True)
def _all_gather(strategy: tf.distribute.Strategy, row: tf.Tensor, timeout_s: float):
    """``row`` of every replica, concatenated (traced once per strategy and row length; no TF work at import)."""
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)

    def replica(value: tf.Tensor) -> tf.Tensor:
        value = tf.identity(value)  # on this replica's device (a captured tensor has none, which collectives refuse)
        return tf.distribute.get_replica_context().all_gather(value, axis=0, options=options)

    return strategy.run(replica, args=(row,))


def chief_value(strategy: tf.distribute.Strategy, value: float) -> float:
    """The chief's ``value`` on every worker (so that decisions taken on it, e.g. what to save, agree); ``value`` on one process."""
    if not is_multi_worker(strategy):
        return float(value)
    rows = gather(strategy, [float(is_chief(task_of(strategy))), float(value)])
    return float(rows[rows[:, 0] == 1][0, 1])


def reads_files(dataset: tf.data.Dataset) -> bool:
    """Whether ``dataset`` reads records from files (TFRecord, text lines, fixed-length records): what FILE sharding splits."""
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph(
        external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE).numpy())
    ops = {node.op for node in graph.node} | {node.op for function in graph.library.function for node in function.node_def}
    return any(op.startswith(_FILE_READERS) for op in ops)


def with_data_sharding(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` auto-sharded by DATA across workers, unless it reads files or names its own policy.

    DATA: every worker runs the whole pipeline and keeps its share of each global batch, so the
    workers together train on exactly the batches of one process (the pipelines of
    :mod:`helpers.data.pipeline` start from ``Dataset.range``, not from files). A dataset reading
    files keeps AUTO (files split across workers).
    """
    policy = dataset.options().experimental_distribute.auto_shard_policy
    if policy != tf.data.experimental.AutoShardPolicy.AUTO or reads_files(dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
