"""Training loop pieces: schedule, resumable fit with best checkpoint, progress, seeds, precision, devices.

A run folder holds::

    state.json          the commit record: last committed epoch, best value and its epoch, early-stopping
                        counter, monitor and mode, the training state to resume from
    resume/             training state (weights + optimiser) after that epoch, ``epoch-NNNN.index`` and
                        ``epoch-NNNN.data-*`` (deleted when training finishes)
    best.weights.h5     weights of the best epoch (by ``monitor``)
    log.csv             one row per committed epoch (``epoch`` from 0, then the logged values)
    last.weights.h5     weights after the last epoch (written when training finishes)
    finished.json       the number of epochs asked for, written last when training finishes
    tensorboard/        TensorBoard logs (optional)
    .*.tmp.*            temporaries of an epoch being committed (removed on the next start if uncommitted)

Each epoch is committed in one step by :class:`RunCheckpoint`: its files are written under new
names, then ``state.json`` is replaced (the commit); the renames it lists follow, and are redone on
the next start if a kill came first. The finish commits with ``finished.json``. Re-running :func:`fit` with the same ``run_dir`` after a kill at
any point resumes after the last committed epoch with the optimiser state, learning-rate position
and best score intact: no epoch is lost or logged twice. Re-running it after training finished
trains nothing: the last weights are loaded and the log returned.

Several workers (a model built under ``MultiWorkerMirroredStrategy``, see :func:`get_strategy` and
:mod:`helpers.modeling.distributed`): every worker runs the same :func:`fit`; the chief commits
``run_dir``, each other worker the same files in its temporary ``run_dir/.workers/<type>-<index>/``,
removed when training ends. A restart resumes every worker from the chief's committed state, so
``run_dir`` must be on storage every worker sees, at the same path (checked).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files
from helpers.modeling import distributed
from helpers.backend import keras, tf

__all__ = [
    "POLICIES",
    "EpochTimer",
    "PrecisionChoice",
    "RunCheckpoint",
    "TqdmProgress",
    "WarmupCosine",
    "choose_precision",
    "configure_precision",
    "cpu_supports_bfloat16",
    "device_summary",
    "fit",
    "get_strategy",
    "load_weights",
    "read_log",
    "set_seed",
]

# names inside a run folder
STATE, LOG, BEST, LAST = "state.json", "log.csv", "best.weights.h5", "last.weights.h5"
FINISHED, RESUME = "finished.json", "resume"
STATE_KEYS = frozenset({"epoch", "best", "best_epoch", "wait", "monitor", "mode", "checkpoint", "renames"})


@keras.utils.register_keras_serializable(package="helpers")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``base_lr * warmup_start`` to ``base_lr`` over ``warmup_steps``, then cosine to ``min_lr``."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0, warmup_start: float = 0.1):
        super().__init__()
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps}, {warmup_steps}")
        if base_lr <= 0 or min_lr < 0 or min_lr > base_lr:
            raise ValueError(f"need base_lr > 0 and 0 <= min_lr <= base_lr, got {base_lr}, {min_lr}")
        self.base_lr, self.total_steps, self.warmup_steps = float(base_lr), int(total_steps), int(warmup_steps)
        self.min_lr, self.warmup_start = float(min_lr), float(warmup_start)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        warmup_lr = self.base_lr * (self.warmup_start + (1 - self.warmup_start) * step / warm)
        decay_steps = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine_lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warmup_lr, cosine_lr)

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "min_lr": self.min_lr, "warmup_start": self.warmup_start}


class RunCheckpoint(keras.callbacks.Callback):
    """Commit each epoch to ``run_dir`` in one atomic step; stop after ``patience`` epochs without gain.

    At an epoch end the training state (``resume/epoch-NNNN.*``: weights and optimiser), the best
    weights (when ``monitor`` improved) and the whole log go to new, temporary names; then
    ``state.json`` is replaced, and that rename is the commit. It names the temporaries still to
    be renamed to ``best.weights.h5`` and ``log.csv``: done right after, or on the next start if a
    kill came first. Files it does not name are leftovers of an uncommitted epoch, removed on start.
    The best value and the patience counter survive restarts (Keras' ModelCheckpoint and
    EarlyStopping would forget them). ``state``: the committed record (``epoch`` -1 before any).
    """

    def __init__(self, run_dir: str | os.PathLike, monitor: str = "val_severstal_score", mode: str = "max",
                 patience: int | None = None, min_delta: float = 0.0):
        super().__init__()
        self.run_dir, self.monitor = Path(run_dir), monitor
        self.mode = checks.choice("mode", mode, ("max", "min"))
        self.patience = None if patience is None else checks.positive_int("patience", patience)
        self.min_delta = checks.number("min_delta", min_delta, low=0.0)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = _recover(self.run_dir) or {"epoch": -1, "best": None, "best_epoch": None, "wait": 0,
                                               "monitor": monitor, "mode": mode, "checkpoint": None, "renames": []}
        if (self.state["monitor"], self.state["mode"]) != (monitor, mode):
            raise ValueError(f"{self.run_dir / STATE} was trained with monitor={self.state['monitor']!r}, "
                             f"mode={self.state['mode']!r}, not {monitor!r}, {mode!r}: use those, or another run_dir")
        self.rows = _read_rows(self.run_dir, self.state["epoch"] + 1)

    @property
    def epochs_done(self) -> int:
        """Number of committed epochs."""
        return self.state["epoch"] + 1

    @property
    def stopped(self) -> bool:
        """Whether early stopping has ended this run."""
        return self.patience is not None and self.state["wait"] >= self.patience

    def restore(self, model: keras.Model) -> None:
        """Load the committed training state (weights, optimiser step and slots) into ``model``, if any."""
        _build_optimizer(model)
        if self.state["checkpoint"] is None:
            return
        prefix = self.run_dir / self.state["checkpoint"]
        if not Path(f"{prefix}.index").is_file():
            raise ValueError(f"{self.run_dir / STATE} names the training state {prefix}, which is missing: "
                             "delete the run folder to train again")
        try:
            _trackables(model).read(str(prefix)).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise ValueError(f"cannot restore {prefix} into this model (another architecture or optimiser?): {err}") from None

    def _improved(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"monitor {self.monitor!r} is not among the logged values {sorted(logs)}")
        if epoch <= self.state["epoch"]:
            raise ValueError(f"epoch {epoch} is already committed in {self.run_dir / STATE}")
        tag = f"epoch-{epoch:04d}"
        state = dict(self.state, epoch=epoch, checkpoint=f"{RESUME}/{tag}", renames=[])
        _trackables(self.model).write(str(self.run_dir / state["checkpoint"]))
        # several workers: the chief's value decides for all (saving is a collective every worker must join)
        value = distributed.chief_value(self.model.distribute_strategy, float(logs[self.monitor]))
        if np.isfinite(value) and self._improved(value):
            state["renames"].append([_temp_name(BEST, tag), BEST])
            self.model.save_weights(self.run_dir / state["renames"][-1][0])
            state.update(best=value, best_epoch=epoch, wait=0)
        else:
            state["wait"] += 1
        rows = [*self.rows, _log_row(epoch, logs)]
        state["renames"].append([_temp_name(LOG, tag), LOG])
        with open(self.run_dir / state["renames"][-1][0], "w", encoding="utf-8", newline="") as handle:
            handle.write(_csv_text(rows))
        files.atomic_write_json(self.run_dir / STATE, state)  # the commit
        self.state, self.rows = state, rows
        _complete(self.run_dir, state)
        if self.stopped:
            self.model.stop_training = True


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the training steps of each epoch, validation excluded) to the logs."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if getattr(self, "_train_seconds", 0) is None:  # first evaluation inside this epoch
            self._train_seconds = time.perf_counter() - self._started

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = self._train_seconds or time.perf_counter() - self._started


class TqdmProgress(keras.callbacks.Callback):
    """One progress bar over epochs (with the latest metrics) and one over the steps of an epoch."""

    def __init__(self, epochs: int, steps: int | None, shown: tuple[str, ...] = ("loss", "val_loss", "val_severstal_score")):
        super().__init__()
        self.epochs, self.steps, self.shown = epochs, steps, shown

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch_bar = tqdm(total=self.epochs, desc="epochs", unit="epoch")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_bar.n = epoch
        self.epoch_bar.refresh()
        self.step_bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}", unit="batch", leave=False)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step_bar.update(1)
        if logs and "loss" in logs:
            self.step_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.step_bar.close()
        self.epoch_bar.update(epoch + 1 - self.epoch_bar.n)
        self.epoch_bar.set_postfix({k: f"{logs[k]:.4f}" for k in self.shown if logs and k in logs})

    def on_train_end(self, logs: dict | None = None) -> None:
        self.epoch_bar.close()


def set_seed(seed: int, deterministic_ops: bool = False) -> None:
    """Seed Python, numpy and TensorFlow; ``deterministic_ops`` also makes TF kernels deterministic (slower)."""
    keras.utils.set_random_seed(int(seed))
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def configure_precision(policy: str = "auto") -> str:
    """Set the Keras dtype policy: ``auto`` = mixed_float16 when a GPU is visible, else float32.

    Call before building the model. Returns the policy name in force. :func:`choose_precision`
    makes ``auto`` measure, per model, whether bfloat16 pays on a CPU that supports it.
    """
    checks.choice("precision policy", policy, POLICIES)
    if policy == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def cpu_supports_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports native bfloat16 arithmetic (``avx512_bf16`` or ``amx_bf16`` flags; Linux)."""
    try:
        flags = set(Path(cpuinfo).read_text(errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype policy in force, why, and the training rates (images/s) the probe measured (``{}`` if none)."""

    policy: str
    reason: str
    rates: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """For a run's settings or metrics."""
        return {"precision": self.policy, "precision_reason": self.reason, "precision_rates": dict(self.rates)}


def _training_rate(build: Callable[..., keras.Model], settings: dict[str, Any], batch: tuple, loss: Any, steps: int) -> float:
    """Images/s of ``steps`` training steps on ``batch`` (after one untimed step) of a model built now."""
    model = build(**settings)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    images, targets = (np.asarray(part) for part in batch)
    model.train_on_batch(images, targets)  # traces the step
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    return steps * len(images) / (time.perf_counter() - started)


def choose_precision(
    precision: str,
    build: Callable[..., keras.Model],
    settings: dict[str, Any],
    batch: tuple | tf.data.Dataset,
    loss: Any,
    steps: int = 3,
    margin: float = 1.15,
    planned_steps: int | None = None,
    min_planned_steps: int = 100,
) -> PrecisionChoice:
    """Set the dtype policy for the model ``build(**settings)`` trained on batches like ``batch``.

    An explicit ``precision`` wins. ``auto``: mixed_float16 on a GPU; on a CPU without bfloat16
    support, float32; on a CPU with it, a probe trains the actual model on ``batch`` for ``steps``
    steps under float32 and under mixed_bfloat16, in this process, and keeps mixed_bfloat16 only
    if it is at least ``margin`` times faster (depthwise convolutions, e.g. MobileNet, are slower in
    bfloat16 on such CPUs). A run of fewer than ``min_planned_steps`` ``planned_steps`` cannot repay
    the probe (two builds and traces): float32, unprobed. ``batch``: ``(images, targets)``, or the
    training dataset, of which one batch is read only if the probe runs (reading starts an iteration,
    which moves a seeded shuffle and augmentation stream on). Call before building the model to train.
    """
    checks.choice("precision policy", precision, POLICIES)
    steps = checks.positive_int("steps", steps)
    if planned_steps is not None:
        planned_steps = checks.positive_int("planned_steps", planned_steps)
    if precision != "auto":
        return PrecisionChoice(configure_precision(precision), "asked for")
    if tf.config.list_physical_devices("GPU"):
        return PrecisionChoice(configure_precision("mixed_float16"), "auto: a GPU is visible")
    if not cpu_supports_bfloat16():
        return PrecisionChoice(configure_precision("float32"), "auto: this CPU reports no bfloat16 support")
    if distributed.n_tasks() > 1:  # each worker would time its own probe, and they could choose differently
        return PrecisionChoice(configure_precision("float32"),
                               f"auto: {distributed.n_tasks()} workers ({distributed.CONFIG_ENV}) must agree, so no bfloat16 probe")
    if planned_steps is not None and planned_steps < min_planned_steps:
        return PrecisionChoice(configure_precision("float32"),
                               f"auto: {planned_steps} training steps are too few to repay a bfloat16 probe "
                               f"(probed from {min_planned_steps})")
    if isinstance(batch, tf.data.Dataset):
        batch = next(iter(batch))
    rates = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        rates[policy] = _training_rate(build, settings, batch, loss, steps)
    chosen = "mixed_bfloat16" if rates["mixed_bfloat16"] >= margin * rates["float32"] else "float32"
    ratio = rates["mixed_bfloat16"] / rates["float32"]
    reason = f"auto: probe of {steps} training steps, bfloat16 {ratio:.2f}x float32 (kept if >= {margin:g}x)"
    return PrecisionChoice(configure_precision(chosen), reason, rates)


def device_summary() -> str:
    """Where training runs, in words: each visible GPU's name, or the CPU and its core count."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count() or 1} cores, no GPU visible)"
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return ", ".join(f"GPU:{i} {name}" for i, name in enumerate(names))


def get_strategy(devices: list[str] | None = None, timeout_s: float | None = None) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster of 2+ tasks, else MirroredStrategy over
    ``devices`` (default: every GPU when there are 2+), else the default strategy.

    A malformed ``TF_CONFIG`` is a ``ValueError`` naming the field (:func:`helpers.modeling.distributed.read_tf_config`).
    Across workers every local GPU takes part, the global batch is split over all replicas, and
    ``timeout_s`` bounds each collective (:func:`helpers.modeling.distributed.multi_worker_strategy`).
    ``devices`` given: MirroredStrategy over them on this machine, whatever ``TF_CONFIG`` says.
    """
    if devices is None and distributed.n_tasks() > 1:
        return distributed.multi_worker_strategy(timeout_s)
    if devices is None:
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = gpus if len(gpus) > 1 else None
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def load_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.load_weights(path)`` that also works for a model built under MirroredStrategy or MultiWorkerMirroredStrategy.

    Keras assigns a ``.weights.h5`` file's HDF5 datasets to the variables as they are, which the
    summed per-replica variables of a metric (the loss tracker's) refuse under those strategies
    (``TypeError: unsupported operand type(s) for /: 'Dataset' and 'int'``); for such a model Keras'
    own loader is handed the arrays read into memory instead.
    """
    strategy = model.distribute_strategy
    if not str(path).endswith(".weights.h5") or not isinstance(
            strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        model.load_weights(path)
        return
    saving_lib = importlib.import_module(f"{keras.__name__}.src.saving.saving_lib")
    store = _ArrayStore(saving_lib.H5IOStore(str(path), mode="r"))
    try:
        saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="", visited_trackables=set())
    finally:
        store.close()


class _ArrayStore:
    """Keras' HDF5 variable store (``saving_lib.H5IOStore``) handing out arrays instead of HDF5 datasets."""

    def __init__(self, store):
        self.store = store

    def get(self, inner_path: str) -> dict[str, np.ndarray]:
        entry = self.store.get(inner_path)
        return {key: np.asarray(entry[key]) for key in entry.keys()}

    def close(self) -> None:
        self.store.close()


def read_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The epoch log ``log.csv`` of a run folder."""
    return pd.read_csv(Path(run_dir) / "log.csv")


def fit(
    model: keras.Model,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    run_dir: str | os.PathLike,
    epochs: int,
    steps_per_epoch: int | None = None,
    monitor: str = "val_severstal_score",
    mode: str = "max",
    patience: int | None = None,
    tensorboard: bool = True,
    progress: bool = True,
    extra_callbacks: list | None = None,
    scorers: list | None = None,
) -> pd.DataFrame:
    """Train a compiled model, resuming from ``run_dir`` if a previous run was interrupted; the epoch log.

    Every epoch is committed atomically (see :class:`RunCheckpoint`), so a run killed at any point
    resumes after its last committed epoch, optimiser included. A run that finished before
    (``finished.json``, same ``epochs``) is not trained again: its last weights are loaded into
    ``model`` and its log is returned; other ``epochs`` raise, as do a ``monitor``/``mode`` other than
    the run's. Keeps the best weights by ``monitor`` in ``run_dir/best.weights.h5``. Stops early
    after ``patience`` epochs without improvement (``None`` = never), also across restarts.
    ``scorers``: callbacks that add values to the epoch logs (e.g. validation scores computed in
    numpy); they run before the commit, so those values are logged and can be the ``monitor``.
    ``extra_callbacks`` run after everything else (values they add are not logged).
    The log has one row per epoch: ``epoch`` (from 0), the logged values, ``epoch_seconds``.

    Under ``MultiWorkerMirroredStrategy`` (:func:`get_strategy` with a ``TF_CONFIG`` cluster) every worker
    calls ``fit`` alike; datasets give global batches (split over the workers' replicas by Keras, a
    multiple of their number, else ``ValueError``), sharded by DATA unless they read files
    (:func:`helpers.modeling.distributed.with_data_sharding`). The chief commits ``run_dir``; the other
    workers restore the chief's committed state and commit to their temporary folders, removed at the
    end, so ``run_dir`` must be on storage every worker sees, at the same path (checked: ``ValueError``).
    A worker lost mid-training makes the others raise ``RuntimeError`` (restart them all to resume).
    """
    epochs = checks.positive_int("epochs", epochs)
    checks.choice("mode", mode, ("max", "min"))
    run_dir = Path(run_dir)
    settings = dict(steps_per_epoch=steps_per_epoch, monitor=monitor, mode=mode, patience=patience, tensorboard=tensorboard,
                    progress=progress, extra_callbacks=extra_callbacks, scorers=scorers)
    if distributed.is_multi_worker(model.distribute_strategy):
        return _fit_workers(model, train_data, val_data, run_dir, epochs, settings)
    if distributed.n_tasks() > 1:
        raise ValueError(f"{distributed.CONFIG_ENV} names a cluster of {distributed.n_tasks()} tasks, but the model was built "
                         "outside MultiWorkerMirroredStrategy: build and compile it under train.get_strategy().scope()")
    return _fit_here(model, train_data, val_data, run_dir, epochs, **settings)


def _fit_here(model, train_data, val_data, run_dir: Path, epochs: int, steps_per_epoch, monitor, mode, patience, tensorboard,
              progress, extra_callbacks, scorers) -> pd.DataFrame:
    """:func:`fit` in one folder: this process's ``run_dir`` (a worker's own folder under several workers)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = run_dir / FINISHED
    if finished.is_file():
        record = files.read_json(finished)
        recorded = record.get("epochs") if isinstance(record, dict) else None
        if not isinstance(recorded, int):
            raise ValueError(f"{finished}: expected {{\"epochs\": N}}, got {record!r}")
        if recorded != epochs:
            raise ValueError(f"{run_dir} holds a finished run of {recorded} epochs, not {epochs}: "
                             "choose another run_dir, or delete this one to train again")
        _remove_leftovers(run_dir, None)  # a kill may have come while the training state was being deleted
        load_weights(model, run_dir / LAST)
        return read_log(run_dir)
    commit = RunCheckpoint(run_dir, monitor=monitor, mode=mode, patience=patience)
    if commit.epochs_done > epochs:
        raise ValueError(f"{run_dir} holds {commit.epochs_done} trained epochs, more than epochs={epochs}: "
                         "choose another run_dir, or delete this one to train again")
    commit.restore(model)
    if commit.epochs_done < epochs and not commit.stopped:
        steps = steps_per_epoch or _cardinality(train_data)
        callbacks = [
            EpochTimer(),
            *(scorers or []),  # before the commit: the values they add count
            commit,
            *([keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0)]
              if tensorboard else []),
            *([TqdmProgress(epochs, steps, shown=tuple(dict.fromkeys(("loss", "val_loss", monitor))))] if progress else []),
            *(extra_callbacks or []),
        ]
        model.fit(train_data, validation_data=val_data, epochs=epochs, initial_epoch=commit.epochs_done,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0)
    _finish(model, run_dir, epochs)
    return read_log(run_dir)


def _fit_workers(model, train_data, val_data, run_dir: Path, epochs: int, settings: dict) -> pd.DataFrame:
    """:func:`fit` on every worker of a cluster: the chief in ``run_dir``, the others in their folders, seeded from the chief's."""
    strategy = model.distribute_strategy
    _check_global_batch(train_data, strategy.num_replicas_in_sync)
    train_data, val_data = (distributed.with_data_sharding(d) if isinstance(d, tf.data.Dataset) else d
                            for d in (train_data, val_data))
    own_dir = distributed.worker_run_dir(run_dir, strategy)
    chief, marker = own_dir == run_dir, run_dir / distributed.WORKERS_DIR / "chief.json"
    try:
        nonce, failure = 0, None
        if chief:  # an interrupted commit is completed before any worker copies the folder
            try:
                nonce = _prepare_chief(run_dir, marker)
            except (ValueError, OSError) as err:
                nonce, failure = -1, err
        nonces = distributed.gather(strategy, [nonce])  # barrier: the chief's folder is ready to be read
        if failure is not None:
            raise failure
        if nonces.min() < 0:
            raise ValueError(f"the chief could not prepare the run folder {run_dir}: its error says why")
        nonce = int(nonces.max())
        try:
            status = [1, *_committed(run_dir)] if chief else _mirror(run_dir, own_dir, marker, nonce)
        except (ValueError, OSError) as err:
            status, failure = [-1, -1, -1], err
        statuses = distributed.gather(strategy, status)  # (seen, finished, epochs) per replica; seen -1: failed
        if failure is not None:
            raise failure
        if statuses[:, 0].min() < 0:
            raise ValueError(f"a worker could not read the chief's committed state in {run_dir}: its error says why")
        if not statuses[:, 0].all():
            raise ValueError(f"a worker does not see the chief's run folder {run_dir}: under several workers it must be on "
                             "storage every worker sees (a network file system), at the same path on every machine")
        if (statuses != statuses[0]).any():
            raise ValueError(f"the workers found different committed states in {run_dir} ((seen, finished, epochs) per "
                             f"replica: {statuses.astype(int).tolist()}); delete the run folder to train again")
        log = _fit_here(model, train_data, val_data, own_dir, epochs, **settings)
        if not chief:
            shutil.rmtree(own_dir, ignore_errors=True)
        distributed.gather(strategy, [0])  # barrier: the run folder is complete, the workers' folders are gone
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as err:
        raise RuntimeError(f"multi-worker training lost a worker ({type(err).__name__}: {_cause(err)}). Every worker must "
                           f"stop; start them all again with the same command and fit resumes from the last epoch committed in "
                           f"{run_dir}") from err
    finally:
        if chief:  # the marker of this start, and .workers once no worker's folder is left in it
            marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                marker.parent.rmdir()
    return log if chief else read_log(run_dir)


def _cause(err: tf.errors.OpError) -> str:
    """The line of a collective's error that says why (and which task), e.g. the coordination service's unhealthy tasks."""
    lines = [line.strip() for line in str(err.message).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "aborted by" in line or "unhealthy" in line:
            tasks = [task for task in lines[i + 1:i + 4] if task.startswith("/job:")]
            return " ".join([line, *tasks])[:400]
    return (lines or [""])[0][:400]


def _check_global_batch(data, replicas: int) -> None:
    """``ValueError`` when the training batch (if static) is not a multiple of the cluster's replicas."""
    if not isinstance(data, tf.data.Dataset):
        return
    first = tf.nest.flatten(data.element_spec)[0]
    batch = first.shape[0] if first.shape.rank else None
    if batch is not None and batch % replicas:
        raise ValueError(f"the global batch size must be a multiple of the {replicas} replicas of the cluster (each takes an "
                         f"equal share), got {batch}")


def _prepare_chief(run_dir: Path, marker: Path) -> int:
    """Complete an interrupted commit of ``run_dir``, then write ``marker`` with a fresh nonce (returned) for the workers to read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _committed(run_dir)
    nonce = int.from_bytes(os.urandom(6), "little") + 1  # > 0; exact in float64
    files.atomic_write_json(marker, {"nonce": nonce})
    return nonce


def _committed(run_dir: Path) -> list[int]:
    """``[finished (0/1), committed epochs]`` of a run folder, completing an interrupted commit."""
    if (run_dir / FINISHED).is_file():
        record = files.read_json(run_dir / FINISHED)
        epochs = record.get("epochs") if isinstance(record, dict) else None
        return [1, epochs if isinstance(epochs, int) else -1]  # a bad record: fit names it on every worker
    state = _recover(run_dir)
    return [0, 0 if state is None else state["epoch"] + 1]


def _mirror(run_dir: Path, own_dir: Path, marker: Path, nonce: int) -> list[int]:
    """Copy the chief's committed state of ``run_dir`` into this worker's ``own_dir``: ``[1, *_committed(own_dir)]``, or
    ``[0, -1, -1]`` when ``marker`` does not hold the chief's ``nonce`` (``run_dir`` is not the chief's folder: no shared storage)."""
    try:
        seen = files.read_json(marker)
    except (OSError, ValueError):
        seen = None
    if not isinstance(seen, dict) or seen.get("nonce") != nonce:
        return [0, -1, -1]
    shutil.rmtree(own_dir, ignore_errors=True)
    own_dir.mkdir(parents=True)
    finished = (run_dir / FINISHED).is_file()
    for name in (STATE, LOG, BEST, LAST, FINISHED):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, own_dir / name)
    if (run_dir / RESUME).is_dir() and not finished:  # a finished run's training state may be being deleted
        shutil.copytree(run_dir / RESUME, own_dir / RESUME)
    return [1, *_committed(own_dir)]


def _cardinality(data: tf.data.Dataset) -> int | None:
    n = int(data.cardinality())
    return n if n > 0 else None


def _build_optimizer(model: keras.Model) -> None:
    """Create the optimiser's slots now rather than inside the first training step.

    Restored at once, saved by ``_finish`` even with no step, and the train step is traced once
    (variables created during its first call make TensorFlow trace it twice: measured 1.6 s per
    ``fit`` for a MobileNet 0.25 classifier).
    """
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer) and not getattr(optimizer, "_built", False):
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def _trackables(model: keras.Model) -> tf.train.Checkpoint:
    """What a resumed run needs: the model's variables and the optimiser's (step, slots)."""
    optimizer = getattr(model, "optimizer", None)
    return tf.train.Checkpoint(model=model, **({"optimizer": optimizer} if optimizer is not None else {}))


def _temp_name(final: str, tag: str) -> str:
    """``.<tag>.tmp.<final>``: hidden, in the same folder, and with ``final``'s suffix (``.weights.h5`` picks the format)."""
    return f".{tag}.tmp.{final}"


def _complete(run_dir: Path, state: dict) -> None:
    """Finish a commit (again, after a kill): rename its temporaries into place, remove everything it does not name."""
    for temp, final in state["renames"]:
        if (run_dir / temp).is_file():  # gone: renamed before the kill
            os.replace(run_dir / temp, run_dir / final)
    _remove_leftovers(run_dir, state["checkpoint"])


def _remove_leftovers(run_dir: Path, checkpoint: str | None) -> None:
    """Delete temporaries of uncommitted writes, and training states other than ``checkpoint``."""
    for path in [*run_dir.glob(".*.tmp.*"), *run_dir.glob(".*.tmp")]:
        if path.is_file():
            path.unlink()
    kept = None if checkpoint is None else re.compile(re.escape(Path(checkpoint).name) + r"\.(index|data-\d+-of-\d+)")
    resume = run_dir / RESUME
    if kept is None:
        shutil.rmtree(resume, ignore_errors=True)
        return
    for path in resume.iterdir() if resume.is_dir() else ():
        if not kept.fullmatch(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _recover(run_dir: Path) -> dict | None:
    """The committed state of ``run_dir`` with its commit completed, or ``None`` when nothing was committed."""
    path = run_dir / STATE
    if (run_dir / "backup").exists():
        raise ValueError(f"{run_dir} holds an unfinished run of an older helpers.modeling.train (backup/ of Keras' "
                         "BackupAndRestore), which cannot be resumed: delete the folder to train again")
    if not path.is_file():
        stray = [name for name in (LOG, BEST) if (run_dir / name).exists()]
        if stray:
            raise ValueError(f"{run_dir} holds {' and '.join(stray)} but no {STATE}: not a run folder of "
                             "helpers.modeling.train.fit; delete them (or the folder) to train again")
        _remove_leftovers(run_dir, None)
        return None
    state = files.read_json(path)
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise ValueError(f"{path}: not a training state of helpers.modeling.train.fit (needs {sorted(STATE_KEYS)}); an "
                         "unfinished run of an older version cannot be resumed: delete the folder to train again")
    _complete(run_dir, state)
    return state


def _read_rows(run_dir: Path, epochs: int) -> list[dict]:
    """The rows of ``log.csv`` as text, checked to be epochs ``0 .. epochs - 1``."""
    path = run_dir / LOG
    if epochs == 0:
        return []
    if not path.is_file():
        raise ValueError(f"{path} is missing, though {run_dir / STATE} commits {epochs} epoch(s)")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    found = [row.get("epoch") for row in rows]
    if found != [str(epoch) for epoch in range(epochs)]:
        raise ValueError(f"{path}: epochs {found} do not match the {epochs} committed in {run_dir / STATE}")
    return rows


def _log_row(epoch: int, logs: dict) -> dict:
    """``epoch`` then the logged values by name (as CSVLogger wrote them), as text."""
    def cell(value):
        if hasattr(value, "numpy"):
            value = value.numpy()
        return str(value.item() if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0 else value)
    return {"epoch": str(epoch), **{key: cell(logs[key]) for key in sorted(logs)}}


def _csv_text(rows: list[dict]) -> str:
    """CSV of ``rows``; columns in order of first appearance, blanks where a row lacks one."""
    out = io.StringIO()
    writer = csv.DictWriter(out, list(dict.fromkeys(key for row in rows for key in row)), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _finish(model: keras.Model, run_dir: Path, epochs: int) -> None:
    """Write the last weights, then ``finished.json`` (the commit of the finish), then drop the training state."""
    temp = run_dir / _temp_name(LAST, "finish")
    model.save_weights(temp)
    os.replace(temp, run_dir / LAST)
    files.atomic_write_json(run_dir / FINISHED, {"epochs": epochs})
    shutil.rmtree(run_dir / RESUME, ignore_errors=True)
