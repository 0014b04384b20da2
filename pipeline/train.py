"""``beamsplitter train``: a Beam job prepares the training set, then Keras-style training writes a Spleeter checkpoint.

The training-set job: ``manifest rows -> DecodeCrops -> records (TFRecord
shards)``, and beside it ``crop powers -> AnalyzeCropLevels
(tensorflow-transform) -> stats.json + transform_fn``. Training reads the
shards through ``tf.data``, drops the crops that the transform graph marks
silent, and trains with Spleeter's loss and optimizer.

The model folder is a Spleeter model folder (``model.index``,
``model.data-00000-of-00001``, ``checkpoint``, ``.probe``) plus
``params.json`` (the configuration, whose ``model_dir`` names this folder),
``history.json`` (every step's loss) and ``loss.png``. The training set goes
to ``<model folder>/trainset`` unless ``--data-dir`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import tensorflow as tf
from tqdm import tqdm
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models.checkpoint import is_checkpoint_dir, read_weights, write_checkpoint
from models.config import SeparationConfig, load_config
from models.crops import CropSampling
from models.errors import InputError
from models.precision import DEFAULT_PRECISION
from models.provider import resolve_checkpoint
from models.training import Trainer, TrainingParams, batches, initial_weights
from models.uris import normalize
from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import counters
from transforms.catalogue import storage
from transforms.catalogue.training_manifest import TrainingTrack, read_training_manifest

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
HISTORY_FILE = "history.json"
LOSS_CURVE = "loss.png"
MAX_FAILURES_SHOWN = 20
# The training set's folder: records, each wave's mixture powers and unusable rows, tensorflow-transform's output.
RECORDS, POWERS, FAILURES, TRANSFORM_FN, TEMP, STATS = "records", "powers", "failures", "transform_fn", "tmp", "stats.json"


@dataclass(frozen=True)
class TrainRequest:
    config: str
    dataset: str
    model_dir: str
    init: str | None = None
    data_dir: str | None = None
    epochs: float = 1.0
    steps: int | None = None
    seed: int | None = None
    crops_per_chunk: int = 4
    augment: bool = False
    min_level_db: float = -50.0
    precision: str = DEFAULT_PRECISION
    beam_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingSet:
    """Where the job wrote the training set, and what tensorflow-transform found in it."""

    folder: str
    crops: int
    kept: int
    reference_db: float | None

    @property
    def transform_fn(self) -> str:
        return storage.join(self.folder, TRANSFORM_FN)

    def record_files(self) -> list[str]:
        return _matching(storage.join(self.folder, RECORDS, "*.tfrecord"))


class _QuietTftAdvice(logging.Filter):
    """tensorflow-transform advises Arrow record batches on every call; for a column of floats it makes no odds."""

    def filter(self, record):
        return "TFXIO format" not in record.getMessage()


_QUIET_TFT = _QuietTftAdvice()


def prepare(config: SeparationConfig, tracks: list[TrainingTrack], sampling: CropSampling, folder: str,
            min_level_db: float, manifest_uri: str, beam_args: list[str]) -> TrainingSet:
    """Run the training-set jobs; an ``InputError`` lists every track that could not be used.

    On the local runner, whose pipeline reports nothing until it ends, the
    tracks go in waves of ``--local_wave_tracks``, one pipeline each, so that a
    progress bar moves, as in ``beamsplitter run``; distributed runners take
    them in one. Each wave writes its crops' records and mixture powers; a
    last, small job makes tensorflow-transform's full pass over all the powers.
    """
    from transforms.training_set import DecodeCrops

    logging.getLogger("absl").addFilter(_QUIET_TFT)  # a filter already there is not added twice
    options = PipelineOptions(beam_args)
    local = pin_local_runner(options)
    FileSystems.set_options(options)
    for name in (RECORDS, POWERS, FAILURES, TRANSFORM_FN, TEMP, STATS):
        # Leftovers of an earlier preparation (more shards, another transform) must not mix with this one.
        storage.delete_tree(storage.join(folder, name))
    size = max(1, options.view_as(BeamsplitterOptions).local_wave_tracks) if local else len(tracks)
    crops = 0
    with tqdm(total=len(tracks), unit="track", desc="training set", disable=None if local else True,
              file=sys.stderr) as progress:
        for first in range(0, len(tracks), size):
            wave = f"w{first // size:04d}"
            pipeline = beam.Pipeline(options=options)
            tracks_in = pipeline | "Tracks" >> beam.Create(tracks[first:first + size])
            if not local:  # one worker per track rather than per manifest
                tracks_in = tracks_in | "Spread" >> beam.Reshuffle()
            decoded = tracks_in | "DecodeCrops" >> DecodeCrops(config, sampling, manifest_uri)
            _ = (decoded.crops
                 | "Records" >> beam.Map(lambda crop: crop.record)
                 | "WriteRecords" >> beam.io.WriteToTFRecord(storage.join(folder, RECORDS, wave),
                                                             file_name_suffix=".tfrecord"))
            _ = (decoded.crops
                 | "Powers" >> beam.Map(lambda crop: repr(crop.mix_power))  # repr: the float, exactly
                 | "WritePowers" >> beam.io.WriteToText(storage.join(folder, POWERS, wave), file_name_suffix=".txt"))
            _ = (decoded.failures
                 | "AllFailures" >> beam.combiners.ToList()
                 | "WriteFailures" >> beam.Map(lambda failures, uri: _publish_json([m for _, m in sorted(failures)], uri),
                                               storage.join(folder, FAILURES, wave + ".json")))
            result = pipeline.run()
            result.wait_until_finish()
            crops += counters(result).get("training_crops", 0)
            progress.update(min(size, len(tracks) - first))
    failures = [message for uri in _matching(storage.join(folder, FAILURES, "*.json"))
                for message in storage.read_json(uri) or []]
    if failures:
        shown = "; ".join(failures[:MAX_FAILURES_SHOWN])
        more = f"; and {len(failures) - MAX_FAILURES_SHOWN} more, all in {storage.join(folder, FAILURES)}" \
            if len(failures) > MAX_FAILURES_SHOWN else ""
        raise InputError(f"{len(failures)} of {len(tracks)} training tracks unusable: {shown}{more}")
    if not crops:
        return TrainingSet(folder, 0, 0, None)
    return _analyze(options, folder, min_level_db)


def _analyze(options: PipelineOptions, folder: str, min_level_db: float) -> TrainingSet:
    """tensorflow-transform's full pass over the crops' mixture powers: the transform graph and the counts."""
    import tensorflow_transform.beam as tft_beam

    from transforms.crop_levels import AnalyzeCropLevels, LevelStats

    stats_uri = storage.join(folder, STATS)
    pipeline = beam.Pipeline(options=options)
    with tft_beam.Context(temp_dir=storage.join(folder, TEMP)):
        levels, transform_fn = (pipeline
                                | "ReadPowers" >> beam.io.ReadFromText(storage.join(folder, POWERS, "*.txt"))
                                | "Parse" >> beam.Map(float)
                                | "AnalyzeCropLevels" >> AnalyzeCropLevels(min_level_db))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(storage.join(folder, TRANSFORM_FN))
        _ = (levels
             | "Stats" >> beam.CombineGlobally(LevelStats())
             | "WriteStats" >> beam.Map(_publish_json, stats_uri))
    pipeline.run().wait_until_finish()
    storage.delete_tree(storage.join(folder, TEMP))
    stats = storage.read_json(stats_uri) or {}
    return TrainingSet(folder, int(stats.get("crops", 0)), int(stats.get("kept", 0)), stats.get("reference_db"))


def _matching(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _publish_json(value, uri: str) -> None:
    storage.publish_bytes(json.dumps(value, indent=1).encode(), uri)


def starting_point(config: SeparationConfig, init: str | None, model_dir: Path, seed: int):
    """``(weights, global_step, description)``: ``--init``, else the model folder's own checkpoint, else fresh."""
    if init:
        if init.startswith("spleeter:"):
            directory = resolve_checkpoint(load_config(init))
        else:
            directory = resolve_checkpoint(config, init)
        return read_weights(directory, config), 0, f"from {init}"
    if is_checkpoint_dir(model_dir):
        step = _global_step(model_dir)
        return read_weights(model_dir, config), step, f"continuing {model_dir} at step {step}"
    return initial_weights(config, seed), 0, f"from fresh weights (seed {seed})"


def _global_step(directory: Path) -> int:
    reader = tf.train.load_checkpoint(str(directory / "model"))
    return int(reader.get_tensor("global_step")) if reader.has_tensor("global_step") else 0


def _load_history(model_dir: Path, global_step: int) -> tuple[int, list[float]]:
    """``(first_step, losses)`` of the runs that led to the folder's checkpoint at ``global_step``, so that a
    resumed run continues their curve; none when the stored history belongs to other weights."""
    try:
        stored = json.loads((model_dir / HISTORY_FILE).read_text())
        first, losses = int(stored["first_step"]), [float(v) for v in stored["loss"]]
    except (OSError, ValueError, KeyError, TypeError):
        return global_step, []
    return (first, losses) if first + len(losses) == global_step else (global_step, [])


def _write_outputs(model_dir: Path, config: SeparationConfig, trainer: Trainer, history: list[float],
                   first_step: int) -> None:
    from models.loss_curve import plot

    write_checkpoint(model_dir, trainer.weights(), trainer.global_step)
    params = dict(config.raw, model_dir=str(model_dir.resolve()))
    (model_dir / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
    (model_dir / HISTORY_FILE).write_text(json.dumps({"first_step": first_step, "loss": history}) + "\n")
    plot(history, model_dir / LOSS_CURVE, f"{config.name}: {trainer.params.loss_type}, "
         f"learning rate {trainer.params.learning_rate:g}, batch {trainer.params.batch_size}",
         ylabel=trainer.params.loss_type, first_step=first_step)


def _normalized(request: TrainRequest) -> TrainRequest:
    """The request's locations in ``normalize``'s one form (``spleeter:`` names kept)."""
    def location(value: str | None) -> str | None:
        return normalize(value) if value and not value.startswith("spleeter:") else value

    return dataclasses.replace(request, config=location(request.config), dataset=location(request.dataset),
                               model_dir=location(request.model_dir), init=location(request.init),
                               data_dir=location(request.data_dir))


def train(request: TrainRequest) -> int:
    from transforms.crop_levels import keep_filter

    request = _normalized(request)
    config = load_config(request.config)
    params = TrainingParams.of(config)
    seed = params.random_seed if request.seed is None else request.seed
    model_dir = Path(request.model_dir)
    if "://" in request.model_dir:
        raise InputError(f"{request.model_dir}: the model folder must be local (the training set may be remote: "
                         "--data-dir)")
    if model_dir.exists() and not model_dir.is_dir():
        raise InputError(f"{model_dir}: not a folder")
    if (request.steps is not None and request.steps < 1) or request.epochs <= 0 or request.crops_per_chunk < 1:
        raise InputError("--steps, --epochs and --crops-per-chunk must be positive")
    folder = request.data_dir or str(model_dir / "trainset")
    scheme = folder.split("://", 1)[0] if "://" in folder else ""
    if scheme not in tf.io.gfile.get_registered_schemes():  # else found out only after the whole Beam job
        raise InputError(f"{folder}: training reads the records with TensorFlow, which cannot open {scheme}:// "
                         "here (give a local folder or gs://)")
    tracks = read_training_manifest(request.dataset, config.instruments)
    weights, global_step, origin = starting_point(config, request.init, model_dir, seed)
    started = time.monotonic()
    sampling = CropSampling(params.chunk_duration, params.n_chunks_per_song, request.crops_per_chunk, seed, request.augment)
    print(f"train {config.name}: {len(tracks)} tracks from {request.dataset}, preparing the training set in {folder}",
          file=sys.stderr)
    trainset = prepare(config, tracks, sampling, folder, request.min_level_db, request.dataset, request.beam_args)
    if trainset.kept == 0:
        raise InputError(f"{request.dataset}: no training crops ({trainset.crops} crops, none within "
                         f"{-request.min_level_db:g} dB of the set's mean level; tracks need at least T={config.T} "
                         f"frames, {((config.T - 1) * config.frame_step + config.frame_length) / config.sample_rate:.1f} s)")
    steps_per_epoch = math.ceil(trainset.kept / params.batch_size)
    steps = request.steps or max(1, math.ceil(request.epochs * steps_per_epoch))
    print(f"training set: {trainset.crops} crops of {config.T} frames, {trainset.kept} kept (not silent), "
          f"{steps_per_epoch} steps per epoch of {params.batch_size}, prepared in {time.monotonic() - started:.0f} s; "
          f"{steps} steps {origin}", file=sys.stderr)
    tf.random.set_seed(seed)
    trainer = Trainer(config, weights, params, global_step, request.precision)
    data = batches(trainset.record_files(), config, params.batch_size, seed, keep=keep_filter(trainset.transform_fn),
                   shuffle_buffer=min(trainset.kept, 1024))
    first_step, earlier = _load_history(model_dir, global_step) if global_step else (0, [])
    model_dir.mkdir(parents=True, exist_ok=True)

    def save(step):
        write_checkpoint(model_dir, trainer.weights(), step)

    history = trainer.fit(data, steps, on_checkpoint=save, checkpoint_every=params.save_checkpoints_steps)
    _write_outputs(model_dir, config, trainer, earlier + history, first_step)
    head, tail = _mean(history[: max(1, len(history) // 10)]), _mean(history[-max(1, len(history) // 10):])
    print(f"{model_dir}: step {trainer.global_step}, loss {head:.4f} -> {tail:.4f} (first and last tenth of "
          f"{len(history)} steps) in {time.monotonic() - started:.0f} s; {LOSS_CURVE}, {PARAMS_FILE} written")
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")

