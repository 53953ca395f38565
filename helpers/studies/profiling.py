"""Speed and memory of training: the model alone, fed by its input pipeline, and its peak memory.

- :func:`step_rate`: images/s of the model's training step on one batch repeated from memory
  (no decoding, no augmentation): what the model alone can do here.
- :func:`fit_rate`: images/s of the same training step fed by a ``tf.data`` pipeline (end to end).
  ``fit_rate / step_rate`` near 1 means the input pipeline keeps the model busy.
- :func:`training_rates`: the pipeline alone, the step alone and both together, interleaved over
  a few rounds (best of each), with the two ratios that say whether the input keeps up.
- :func:`precision_rates`: :func:`step_rate` of the same model built under each dtype policy
  (float32, mixed_bfloat16, ...), one after the other in this process.
- :func:`pipeline_scaling`: images/s of the input pipeline alone in fresh processes held to 1, 2, ...
  cores (CPU affinity and TensorFlow's thread pools), per augmentation engine: does it scale?
- :func:`peak_training_memory`: peak resident memory of a fresh process that builds a model and
  trains a few steps on random batches (so nothing else the caller holds is counted).
- :func:`shard_reading_rates`: images/s of the pre-training input pipeline (05's) on built-in
  synthetic chest radiographs, read from individual PNG files or from TFRecord shards
  (:mod:`helpers.data.records`), in fresh processes held to 1, 2, ... cores; also
  ``python -m helpers.studies.profiling shard-reading --work-dir DIR --n-images 20000``.

Benchmarks, not tests: report the figures of one run side by side (the machines are noisy).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pathlib import Path

import numpy as np

from helpers.core import checks
from helpers.data import pipeline
from helpers.backend import keras, tf

__all__ = ["SHARD_SOURCES", "fit_rate", "main", "peak_training_memory", "pipeline_scaling", "precision_rates",
           "shard_reading_rates", "step_rate", "training_rates"]

# (source, engine) pairs of shard_reading_rates: 05's pipeline today, its TF-ops engine on the same files, shards
SHARD_SOURCES = (("files", "albumentations"), ("files", "tf"), ("shards", "tf"))


class _StepClock(keras.callbacks.Callback):
    """Wall time from the start of batch ``first`` to the end of the last batch of a ``fit``."""

    def __init__(self, first: int):
        super().__init__()
        self.first, self.started, self.ended = first, None, None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if batch == self.first:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ended = time.perf_counter()


def _timed_fit(model: keras.Model, dataset: tf.data.Dataset, steps: int, warmup: int) -> float:
    """Images/s of one ``model.fit`` over ``dataset``, timing ``steps`` batches after ``warmup`` untimed ones."""
    steps = checks.positive_int("steps", steps)
    warmup = checks.positive_int("warmup", warmup)  # >= 1: the first step traces the graph
    batch_size = dataset.element_spec[0].shape[0]
    if batch_size is None:
        raise ValueError("the dataset's batch size must be static (batch with drop_remainder=True)")
    clock = _StepClock(warmup)
    model.fit(dataset.repeat(), steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[clock])
    return steps * int(batch_size) / (clock.ended - clock.started)


def step_rate(model: keras.Model, images: np.ndarray, masks: np.ndarray, steps: int = 10, warmup: int = 2) -> float:
    """Training images/s of a compiled ``model`` on one batch ``images (B, H, W, C)``, ``masks (B, H, W, K)`` held in memory."""
    cached = tf.data.Dataset.from_tensors((tf.constant(images, tf.float32), tf.constant(masks, tf.float32))).repeat()
    return _timed_fit(model, cached, steps, warmup)


def fit_rate(model: keras.Model, dataset: tf.data.Dataset, steps: int = 10, warmup: int = 2) -> float:
    """Training images/s of a compiled ``model`` fed by ``dataset`` (batches ``(images, masks)``), end to end."""
    return _timed_fit(model, dataset, steps, warmup)


def precision_rates(
    build: Any,
    settings: Mapping[str, Any],
    batch_size: int,
    image_size: Sequence[int],
    loss: Any = "binary_crossentropy",
    policies: Sequence[str] = ("float32", "mixed_bfloat16"),
    steps: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Training images/s of ``build(**settings)`` under each dtype policy, on one random batch held in memory.

    ``image_size = (H, W)`` of the grey input; targets: random 0/1 of the model's output shape.
    Each policy builds and compiles its own model (Adam, ``loss``); the global policy is float32 again afterwards.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    height, width = checks.size("image_size", image_size)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, height, width, 1)).astype(np.float32)
    rates = {}
    try:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            model = build(**settings)
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
            shape = model.compute_output_shape((batch_size, height, width, 1))
            targets = (rng.random(tuple(shape)) < 0.5).astype(np.float32)
            rates[policy] = step_rate(model, images, targets, steps=steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return rates


def training_rates(model: keras.Model, dataset: tf.data.Dataset, steps: int = 10, rounds: int = 2) -> dict[str, float]:
    """Images/s of the input ``dataset`` alone, of ``model``'s training step alone and of both together.

    The three are measured in turn, ``rounds`` times (interleaved, so a busy spell of the machine
    hits them alike), and the best of each is kept. Returns ``pipeline_images_per_s``,
    ``step_images_per_s``, ``end_to_end_images_per_s``, ``pipeline_over_step`` and
    ``end_to_end_over_step``.
    """
    rounds = checks.positive_int("rounds", rounds)
    images, masks = next(iter(dataset))
    best = {"pipeline_images_per_s": 0.0, "step_images_per_s": 0.0, "end_to_end_images_per_s": 0.0}
    for _ in range(rounds):
        measured = {
            "pipeline_images_per_s": pipeline.pipeline_rate(dataset.repeat(), steps),
            "step_images_per_s": step_rate(model, images.numpy(), masks.numpy(), steps),
            "end_to_end_images_per_s": fit_rate(model, dataset, steps),
        }
        best = {key: max(best[key], value) for key, value in measured.items()}
    best["pipeline_over_step"] = best["pipeline_images_per_s"] / best["step_images_per_s"]
    best["end_to_end_over_step"] = best["end_to_end_images_per_s"] / best["step_images_per_s"]
    return best


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _train_in_child(build_settings: dict, batch_size: int, image_size: tuple[int, int], steps: int, loss: str, queue) -> None:
    try:
        from helpers.modeling import builders, losses

        after_import = _max_rss_mib()
        model = builders.build_segmenter(**{**build_settings, "input_shape": (*image_size, 1)})
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.get_loss(loss))
        rng = np.random.default_rng(0)
        classes = model.output_shape[-1]
        images = rng.uniform(0, 255, (batch_size, *image_size, 1)).astype(np.float32)
        masks = (rng.random((batch_size, *image_size, classes)) < 0.05).astype(np.float32)
        for _ in range(steps):
            model.train_on_batch(images, masks)
        queue.put({"after_import_mib": after_import, "peak_mib": _max_rss_mib(), "parameters": model.count_params()})
    except Exception as err:  # report to the parent instead of dying silently
        queue.put({"error": f"{type(err).__name__}: {err}"})


def peak_training_memory(
    build_settings: Mapping[str, Any],
    batch_size: int,
    image_size: Sequence[int],
    steps: int = 3,
    loss: str = "bce_dice",
    timeout: float = 900.0,
) -> dict[str, float]:
    """Peak resident memory (MiB) of a fresh process training ``build_segmenter(**build_settings)``.

    The child builds the model at ``image_size = (H, W)`` (grey input), compiles it with Adam and
    ``loss`` and trains ``steps`` steps on random ``batch_size`` batches. Returns
    ``{"peak_mib", "after_import_mib", "training_mib" (peak minus after-import), "parameters"}``.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    steps = checks.positive_int("steps", steps)
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    size = (checks.positive_int("image height", image_size[0]), checks.positive_int("image width", image_size[1]))
    settings = {key: value for key, value in build_settings.items() if key != "input_shape"}
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_train_in_child, args=(settings, batch_size, size, steps, loss, queue), daemon=True)
    child.start()
    try:
        result = queue.get(timeout=timeout)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    if "error" in result:
        raise RuntimeError(f"the memory probe failed in its child process: {result['error']}")
    result["training_mib"] = result["peak_mib"] - result["after_import_mib"]
    return result


def _print_timed_batches(data, warmup: int, n_batches: int, batch_size: int, threads: int) -> None:
    """A benchmark child's result line: images/s and CPU ms per image of ``n_batches`` batches after ``warmup``."""
    iterator = iter(data)
    for _ in range(warmup):
        next(iterator)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(n_batches):
        next(iterator)
    elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    images = n_batches * batch_size
    print(json.dumps({"images_per_s": images / elapsed, "cpu_ms_per_image": 1000 * cpu_s / images, "threads": threads}), flush=True)


def _pipeline_rate_child(arguments: str) -> None:
    """Child of :func:`pipeline_scaling`: print the images/s of one pipeline as a JSON line."""
    options = json.loads(arguments)
    threads = len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from helpers.core import severstal
    from helpers.data import tf_augment

    wide = severstal.read_dataset(options["dataset_dir"])
    recipe = tf_augment.train_augment(crop_size=options["crop_size"], resize_to=options["resize_to"])
    batching = pipeline.Batching(options["batch_size"], training=True, seed=options["seed"], repeat=True)
    data = pipeline.make_dataset(options["dataset_dir"], list(wide.index), wide, batching, transforms=recipe, check=False,
                                 progress=False, augment_engine=options["engine"])
    _print_timed_batches(data, options["warmup"], options["n_batches"], options["batch_size"], threads)


def pipeline_scaling(
    dataset_dir: str | os.PathLike,
    crop_size: Sequence[int] = (256, 512),
    resize_to: Sequence[int] | None = None,
    cores: Sequence[int] | None = None,
    engines: Sequence[str] = ("albumentations", "tf"),
    batch_size: int = 8,
    n_batches: int = 60,
    warmup: int = 5,
    seed: int = 0,
    timeout: float = 600.0,
) -> list[dict[str, Any]]:
    """Training-pipeline images/s (``crop_size`` crops with the full augmentation) per engine and core count.

    Every image of ``dataset_dir`` is used (resized first to ``resize_to`` if given). ``cores``:
    default 1 and 2 (1 alone on a one-core machine). Each figure comes from a fresh Python process pinned to the first ``n`` CPUs of this one
    (``sched_setaffinity`` before it starts, TensorFlow's intra/inter-op pools set to ``n``), which
    times ``n_batches`` batches of ``pipeline.make_dataset(..., repeat=True)`` after ``warmup`` (>= 1) untimed ones.
    Rows ``{"engine", "cores", "images_per_s", "speedup", "cpu_ms_per_image", "cores_used"}`` (speedup over
    the engine's first core count; CPU time of the child per timed image, and the cores it kept busy:
    ``cpu_ms_per_image * images_per_s / 1000``, which show scaling even when other work shares the machine).
    A benchmark: run it on an otherwise idle machine.
    """
    available = sorted(os.sched_getaffinity(0))
    cores = sorted({1, min(2, len(available))}) if cores is None else cores
    counts = [checks.integer("cores", n, low=1, high=len(available)) for n in cores]
    crop = list(checks.size("crop_size", crop_size))
    resize = None if resize_to is None else list(checks.size("resize_to", resize_to))
    rows: list[dict[str, Any]] = []
    for engine in engines:
        checks.choice("engines", engine, pipeline.ENGINES[1:])
        first = None
        for n in counts:
            arguments = json.dumps({"dataset_dir": str(dataset_dir), "crop_size": crop, "resize_to": resize, "batch_size": checks.positive_int("batch_size", batch_size),
                                    "n_batches": checks.positive_int("n_batches", n_batches), "warmup": checks.positive_int("warmup", warmup), "seed": int(seed), "engine": engine})
            code = f"from helpers.studies import profiling; profiling._pipeline_rate_child({arguments!r})"
            cpus = set(available[:n])
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                                  preexec_fn=functools.partial(os.sched_setaffinity, 0, cpus))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"the {engine} pipeline benchmark on {n} core(s) failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            measured = json.loads(lines[-1])
            rate = measured["images_per_s"]
            first = rate if first is None else first
            rows.append({"engine": engine, "cores": n, "images_per_s": rate, "speedup": rate / first,
                         "cpu_ms_per_image": measured["cpu_ms_per_image"],
                         "cores_used": measured["cpu_ms_per_image"] * rate / 1000})
    return rows


def _pinned_child(code: str, cpus: set[int], timeout: float, what: str) -> dict[str, Any]:
    """Run ``python -c code`` pinned to ``cpus``; its last JSON line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=functools.partial(os.sched_setaffinity, 0, cpus))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {what} benchmark failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _shard_rate_child(arguments: str) -> None:
    """Child of :func:`shard_reading_rates`: print the images/s of one (source, engine) pipeline as a JSON line."""
    options = json.loads(arguments)
    threads = len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from helpers.data import augment, records, tf_augment

    size, engine = tuple(options["image_size"]), options["engine"]
    batching = pipeline.Batching(options["batch_size"], training=options["augment"], seed=options["seed"], repeat=True)
    transforms = None
    if options["augment"]:  # 05's training augmentation
        transforms = (augment.train_transforms(crop_size=None, flips=False) if engine == "albumentations"
                      else tf_augment.train_augment(crop_size=None, flips=False))
    if options["source"] == "shards":
        data = pipeline.make_image_dataset(options["shards"], None, batching, image_size=size, transforms=transforms, check=False)
    else:
        table = records.read_table(options["shards"])  # the source files' paths and labels
        labels = table[records.read_manifest(options["shards"])["label_names"]].to_numpy(np.float32)
        data = pipeline.make_image_dataset(table["path"].tolist(), labels, batching, image_size=size, transforms=transforms,
                                           check=False, progress=False, augment_engine=engine)
    _print_timed_batches(data, options["warmup"], options["n_batches"], options["batch_size"], threads)


def _benchmark_corpus(work_dir: Path, n_images: int, size: tuple[int, int], seed: int, shard_size_mb: float | None,
                      progress: bool) -> Path:
    """The shard folder of ``n_images`` synthetic chest radiographs under ``work_dir`` (generated and written once, then reused)."""
    import pandas as pd

    from helpers.data import radiographs, records
    from helpers.data.synth import chest

    name = f"chest-{n_images}-{size[0]}x{size[1]}-seed{seed}"
    corpus, shards = work_dir / name, work_dir / f"{name}-shards"
    folder = corpus / chest.DATASET_FOLDER
    if not ((folder / "train.csv").is_file() and (folder / "valid.csv").is_file()):
        chest.make_chexpert_dataset(corpus, n_images=n_images, image_size=size, seed=seed, overwrite=True, progress=progress)
    if not records.is_shard_folder(shards):
        tables = [radiographs.read_chexpert(folder / f"{split}.csv", frontal_only=False, image_root=corpus) for split in ("train", "valid")]
        table = pd.concat(tables, ignore_index=True)
        ids = [str(Path(p).relative_to(folder)) for p in table["path"]]
        records.write_image_shards(shards, table["path"], table[list(radiographs.CHEXPERT_FINDINGS)].to_numpy(np.float32),
                                   radiographs.CHEXPERT_FINDINGS, groups=table["group"], ids=ids, source=str(folder),
                                   shard_size_mb=shard_size_mb, overwrite=True, progress=progress)
    return shards


def shard_reading_rates(
    work_dir: str | os.PathLike,
    n_images: int = 20_000,
    image_size: Sequence[int] = (256, 256),
    cores: Sequence[int] | None = None,
    sources: Sequence[tuple[str, str]] = SHARD_SOURCES,
    batch_size: int = 32,
    n_batches: int | None = None,
    warmup: int = 5,
    augment: bool = True,
    seed: int = 0,
    shard_size_mb: float | None = None,
    timeout: float = 1800.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Input images/s of the pre-training pipeline from individual PNG files and from shards, per core count.

    ``n_images`` built-in synthetic chest radiographs of ``image_size = (H, W)``
    (:func:`helpers.data.synth.chest.make_chexpert_dataset`, all views, train + valid) are written
    under ``work_dir`` once, then as shards (:func:`helpers.data.records.write_image_shards`,
    ``shard_size_mb``, default 100); both are reused by later calls. Each ``(source, engine)`` of
    ``sources`` (default :data:`SHARD_SOURCES`: the PNG files through albumentations -- what 05 runs
    --, the same files through TF ops, the shards through TF ops) is timed in a fresh Python
    process pinned to the first ``n`` CPUs (``sched_setaffinity``, as ``taskset -c 0[,1]``;
    TensorFlow's intra/inter-op pools set to ``n``): ``pipeline.make_image_dataset(..., image_size,
    repeat=True)`` with 05's training augmentation (``augment``; else the evaluation path),
    ``n_batches`` batches (default one pass: ``n_images // batch_size``) after ``warmup`` untimed ones.
    ``cores``: default 1 and 2. All figures come from one call, the core counts in turn, sources
    alternating. Rows ``{"source", "engine", "cores", "images_per_s", "cpu_ms_per_image",
    "cores_used", "vs_files_albumentations"}`` (the last: rate over the first source's at the
    same core count). Both layouts are read from a warm page cache (just written). A benchmark:
    run it on an otherwise idle machine.
    """
    n_images = checks.positive_int("n_images", n_images)
    size = checks.size("image_size", image_size, minimum=64)  # the synthetic radiographs' smallest size
    available = sorted(os.sched_getaffinity(0))
    cores = sorted({1, min(2, len(available))}) if cores is None else cores
    counts = [checks.integer("cores", n, low=1, high=len(available)) for n in cores]
    pairs = []
    for pair in sources:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"sources must be (source, engine) pairs from {list(SHARD_SOURCES)}, got {pair!r}")
        pairs.append(tuple(checks.choice("sources", tuple(pair), SHARD_SOURCES)))
    if not pairs:
        raise ValueError(f"sources must name at least one pair of {list(SHARD_SOURCES)}")
    batch_size = checks.positive_int("batch_size", batch_size)
    if batch_size > n_images:
        raise ValueError(f"batch_size must be an integer in 1..{n_images} (n_images), got {batch_size}")
    n_batches = max(1, n_images // batch_size) if n_batches is None else checks.positive_int("n_batches", n_batches)
    warmup = checks.positive_int("warmup", warmup)
    seed = checks.seed("seed", seed)
    shards = _benchmark_corpus(Path(work_dir), n_images, size, seed, shard_size_mb, progress)
    rows: list[dict[str, Any]] = []
    for n in counts:
        first = None
        for source, engine in pairs:
            arguments = json.dumps({"shards": str(shards), "source": source, "engine": engine, "image_size": list(size),
                                    "batch_size": batch_size, "n_batches": n_batches, "warmup": warmup, "augment": bool(augment),
                                    "seed": seed})
            code = f"from helpers.studies import profiling; profiling._shard_rate_child({arguments!r})"
            measured = _pinned_child(code, set(available[:n]), timeout, f"{source}/{engine} reading on {n} core(s)")
            rate = measured["images_per_s"]
            first = rate if first is None else first
            rows.append({"source": source, "engine": engine, "cores": n, "images_per_s": rate,
                         "cpu_ms_per_image": measured["cpu_ms_per_image"],
                         "cores_used": measured["cpu_ms_per_image"] * rate / 1000, "vs_files_albumentations": rate / first})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.studies.profiling shard-reading --work-dir DIR [--n-images 20000] [--json FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.studies.profiling", description="Input-pipeline benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True)
    shard = commands.add_parser("shard-reading", help="pre-training pipeline images/s: PNG files vs TFRecord shards, 1 and 2 cores")
    shard.add_argument("--work-dir", required=True, help="where the synthetic corpus and its shards are written (and reused)")
    shard.add_argument("--n-images", type=int, default=20_000)
    shard.add_argument("--image-size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    shard.add_argument("--cores", type=int, nargs="+", default=None, help="core counts (default 1 2)")
    shard.add_argument("--batch-size", type=int, default=32)
    shard.add_argument("--n-batches", type=int, default=None, help="timed batches per figure (default one pass over the images)")
    shard.add_argument("--eval-path", action="store_true", help="decode + resize only (default: 05's training augmentation)")
    shard.add_argument("--json", default=None, help="also write the rows to this JSON file")
    options = parser.parse_args(argv)
    rows = shard_reading_rates(options.work_dir, n_images=options.n_images, image_size=options.image_size, cores=options.cores,
                               batch_size=options.batch_size, n_batches=options.n_batches, augment=not options.eval_path)
    print(f"{'source':8} {'engine':15} {'cores':>5} {'images/s':>9} {'cpu ms/img':>10} {'cores used':>10} {'vs files+alb':>12}")
    for row in rows:
        print(f"{row['source']:8} {row['engine']:15} {row['cores']:5d} {row['images_per_s']:9.1f} {row['cpu_ms_per_image']:10.2f} "
              f"{row['cores_used']:10.2f} {row['vs_files_albumentations']:12.2f}")
    if options.json:
        from helpers.core import files

        files.atomic_write_json(options.json, {"n_images": options.n_images, "image_size": options.image_size, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
