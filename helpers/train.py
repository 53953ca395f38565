"""Training loop pieces: schedule, resumable fit with best checkpoint, progress, seeds, precision, devices.

A run folder holds::

    best.weights.h5     weights of the best epoch (by ``monitor``)
    last.weights.h5     weights after the last epoch (written when training finishes)
    finished.json       the number of epochs asked for, written when training finishes
    state.json          best value, its epoch and the early-stopping counter (survives restarts)
    backup/             Keras BackupAndRestore state while training (deleted at the end)
    log.csv             one row per epoch (appended across restarts)
    tensorboard/        TensorBoard logs (optional)

Re-running :func:`fit` with the same ``run_dir`` after an interruption resumes from the last
finished epoch with the optimiser state, learning-rate position and best score intact. Re-running
it after training finished trains nothing: the last weights are loaded and the log returned.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .backend import keras, tf

__all__ = [
    "BestCheckpoint",
    "EpochTimer",
    "TqdmProgress",
    "WarmupCosine",
    "configure_precision",
    "fit",
    "get_strategy",
    "read_log",
    "set_seed",
]


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


class BestCheckpoint(keras.callbacks.Callback):
    """Save the best weights by ``monitor`` and stop early after ``patience`` epochs without gain.

    The best value and the patience counter live in ``state.json`` so a resumed run keeps them
    (Keras' ModelCheckpoint and EarlyStopping would forget them on restart).
    """

    def __init__(self, run_dir: str | os.PathLike, monitor: str = "val_severstal_score", mode: str = "max",
                 patience: int | None = None, min_delta: float = 0.0):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.run_dir, self.monitor, self.mode = Path(run_dir), monitor, mode
        self.patience, self.min_delta = patience, float(min_delta)
        self.weights_path = self.run_dir / "best.weights.h5"
        self.state_path = self.run_dir / "state.json"
        self.state = {"best": None, "best_epoch": None, "wait": 0, "monitor": monitor, "mode": mode}
        if self.state_path.is_file():
            self.state.update(json.loads(self.state_path.read_text()))

    def _improved(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"monitor {self.monitor!r} is not among the logged values {sorted(logs)}")
        value = float(logs[self.monitor])
        if np.isfinite(value) and self._improved(value):
            self.model.save_weights(self.weights_path)
            self.state.update(best=value, best_epoch=epoch, wait=0)
        else:
            self.state["wait"] += 1
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_path)
        if self.patience is not None and self.state["wait"] >= self.patience:
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


def configure_precision(policy: str = "auto") -> str:
    """Set the Keras dtype policy: ``auto`` = mixed_float16 when a GPU is visible, else float32.

    Call before building the model. Returns the policy name in force.
    """
    allowed = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    if policy not in allowed:
        raise ValueError(f"precision policy must be one of {allowed}, got {policy!r}")
    if policy == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def get_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over ``devices`` (default: every GPU when there are 2+), else the default strategy."""
    if devices is None:
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = gpus if len(gpus) > 1 else None
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


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
    """Train a compiled model, resuming from ``run_dir`` if a previous run was interrupted.

    A run that finished before (``finished.json``, same ``epochs``) is not trained again: its
    last weights are loaded into ``model`` and its log is returned; other ``epochs`` raise.

    Keeps the best weights by ``monitor`` in ``run_dir/best.weights.h5`` and returns the epoch log.
    Stopping early after ``patience`` epochs without improvement (``None`` = never).
    ``scorers``: callbacks that add values to the epoch logs (e.g. validation scores computed in
    numpy); they run before the checkpoint and the CSV log, so those values are logged and can be
    the ``monitor``. ``extra_callbacks`` run after everything else.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = run_dir / "finished.json"
    if finished.is_file():
        recorded = json.loads(finished.read_text())["epochs"]
        if recorded != epochs:
            raise ValueError(f"{run_dir} holds a finished run of {recorded} epochs, not {epochs}: "
                             "choose another run_dir, or delete this one to train again")
        model.load_weights(run_dir / "last.weights.h5")
        return read_log(run_dir)
    steps = steps_per_epoch or _cardinality(train_data)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        EpochTimer(),
        *(scorers or []),  # before the checkpoint and the log: the values they add count
        BestCheckpoint(run_dir, monitor=monitor, mode=mode, patience=patience),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        *( [keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0)] if tensorboard else [] ),
        *( [TqdmProgress(epochs, steps, shown=tuple(dict.fromkeys(("loss", "val_loss", monitor))))] if progress else [] ),
        *(extra_callbacks or []),
    ]
    model.fit(train_data, validation_data=val_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=0)
    model._training_state = None  # tf-keras' BackupAndRestore deletes it at the end, which breaks any later fit()
    model.save_weights(run_dir / "last.weights.h5")
    finished.write_text(json.dumps({"epochs": epochs}))
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing to resume
    return read_log(run_dir)


def _cardinality(data: tf.data.Dataset) -> int | None:
    n = int(data.cardinality())
    return n if n > 0 else None
