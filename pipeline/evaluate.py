"""``beamsplitter evaluate``: separate a dataset, then score every track with BSSEval v4.

The network's stems come from the catalogue job itself (``pipeline.run``, on
the local runner) over a manifest of the dataset's mixtures written to
``OUT/separation/manifest.csv``; its stems land under ``OUT/separation/stems/``,
where a later evaluation of the same model and checkpoint finds them done.
``oracle=True`` separates each mixture with ideal ratio masks made from its
true stems instead (``models.oracle``): what a perfect mask estimator reaches.

A track that cannot be read, separated or scored is reported and left out;
the others are scored. Outputs (``pipeline.scorecard``): ``OUT/frames.parquet``,
``OUT/tracks.parquet``, ``OUT/sdr.png`` and a summary table on the terminal.
"""

from __future__ import annotations

import csv
import io
import sys

import numpy as np
from tqdm import tqdm

from models import oracle
from models.bsseval import bss_eval
from models.config import SeparationConfig, load_config
from models.errors import BeamsplitterError, InputError
from models.precision import DEFAULT_PRECISION
from models.uris import normalize
from pipeline.scorecard import Scorecard, TrackScores
from transforms.catalogue import storage
from transforms.catalogue.dataset import EvalTrack, discover
from transforms.catalogue.layout import Layout
from transforms.catalogue.manifest import Failure

SEPARATION = "separation"
# Float stems: scores measure the model, not a 16-bit quantization of its output.
STEM_CODEC, STEM_SAMPLE_FORMAT = "wav", "f32"


class SeparationError(BeamsplitterError):
    """The catalogue job produced no stems for a track."""

    stage = "separate"


def evaluate(dataset: str, output: str, model: str, checkpoint: str | None = None, oracle_masks: bool = False,
             precision: str = DEFAULT_PRECISION) -> int:
    """Evaluate ``model`` (or the oracle) on ``dataset``, its network in ``precision``, writing under ``output``.

    Returns 0 when every track was scored, 1 when some were left out; raises
    ``BeamsplitterError`` when nothing could be scored.
    """
    # Absolute: the manifest written under OUT/separation/ is read relative to its own folder.
    dataset, output = normalize(dataset), normalize(output)
    config = load_config(model)
    tracks, failures = discover(dataset, config.instruments)
    for failure in failures:
        _report(failure)
    if not tracks:
        raise InputError(f"{dataset}: no track to evaluate")
    if oracle_masks:
        separator, model_id = _OracleStems(config), f"oracle:{config.name}"
    else:
        separator = _run_catalogue_job(tracks, output, config, model, checkpoint, precision)
        model_id = separator.model_id
    scored = []
    for track in tqdm(tracks, unit="track", desc="scoring", disable=None, file=sys.stderr):
        try:
            references = load_references(track, config)
            estimates = separator(track, references)
            metrics = bss_eval(references, estimates, window=config.sample_rate, hop=config.sample_rate)
        except BeamsplitterError as exc:
            failures.append(_report(Failure.of(track.track_id, track.mixture, exc)))
            continue
        scored.append(TrackScores(track.track_id, config.instruments, metrics))
    if not scored:
        raise InputError(f"{dataset}: no track could be scored ({len(failures)} failed)")
    card = Scorecard(scored, model_id, config.sample_rate)
    written = card.write(output)
    print(card.summary())
    print("written: " + ", ".join(written))
    if failures:
        print(f"{len(failures)} track(s) left out, see the errors above", file=sys.stderr)
    return 1 if failures else 0


def load_references(track: EvalTrack, config: SeparationConfig) -> np.ndarray:
    """The true stems of ``track`` as float32 ``[n_instruments, n_samples, 2]`` at the model's rate.

    Raises ``InputError`` naming the file when the stems differ in length.
    """
    stems, first = [], None
    for instrument in config.instruments:
        parts = []
        for uri in track.stems[instrument]:
            samples = storage.load_audio(uri, config.sample_rate)
            if first is None:
                first = (uri, len(samples))
            elif len(samples) != first[1]:
                raise InputError(f"{uri}: {len(samples)} samples, but {first[0]} has {first[1]}: "
                                 "the stems of a track must be equally long")
            parts.append(samples)
        stems.append(np.sum(parts, axis=0, dtype=np.float32))
    return np.stack(stems)


def _check_length(uri: str, samples: np.ndarray, references: np.ndarray, track: EvalTrack) -> None:
    if len(samples) != references.shape[1]:
        raise InputError(f"{uri}: {len(samples)} samples, but the stems of track {track.track_id} "
                         f"have {references.shape[1]} ({track.stems[next(iter(track.stems))][0]})")


class _OracleStems:
    """Separation by ideal ratio masks: needs the references, not the network."""

    def __init__(self, config: SeparationConfig):
        self.config = config

    def __call__(self, track: EvalTrack, references: np.ndarray) -> np.ndarray:
        mixture = storage.load_audio(track.mixture, self.config.sample_rate)
        _check_length(track.mixture, mixture, references, track)
        return oracle.separate(mixture, references, self.config)


class _CatalogueStems:
    """The stems the catalogue job wrote, read back."""

    def __init__(self, config: SeparationConfig, layout: Layout, model_id: str, failed: dict[str, str]):
        self.config, self.layout, self.model_id, self.failed = config, layout, model_id, failed

    def __call__(self, track: EvalTrack, references: np.ndarray) -> np.ndarray:
        if track.track_id in self.failed:
            raise SeparationError(self.failed[track.track_id])
        stems = []
        for instrument in self.config.instruments:
            uri = self.layout.stem(track.track_id, instrument, STEM_CODEC)
            if not storage.exists(uri):
                raise SeparationError(f"{uri}: no such stem (the separation of {track.mixture} did not finish)")
            stems.append(storage.load_audio(uri, self.config.sample_rate))
        # The job's stems are exactly as long as the mixture it decoded.
        _check_length(track.mixture, stems[0], references, track)
        return np.stack(stems)


def _run_catalogue_job(tracks: list[EvalTrack], output: str, config: SeparationConfig, model: str,
                       checkpoint: str | None, precision: str) -> _CatalogueStems:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.run import new_run_id, run_job

    prefix = storage.join(output, SEPARATION)
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(["track_id", "uri"])
    writer.writerows((t.track_id, t.mixture) for t in tracks)
    manifest_uri = storage.join(prefix, "manifest.csv")
    storage.publish_bytes(listing.getvalue().encode(), manifest_uri, "text/csv")
    # No flags: Beam would otherwise parse this process's own sys.argv into the job.
    result = run_job(PipelineOptions([], manifest=manifest_uri, output=prefix, model=model, checkpoint=checkpoint,
                                     precision=precision, codec=STEM_CODEC, sample_format=STEM_SAMPLE_FORMAT,
                                     run_id="evaluate-" + new_run_id()))
    failed = {failure.track_id: failure.message for failure in result.failures()}
    return _CatalogueStems(config, result.settings.job.layout, result.settings.job.model_id, failed)


def _report(failure: Failure) -> Failure:
    # Through tqdm, so that a line written while the scoring bar shows does not break it.
    tqdm.write(f"error: {failure.track_id}: {failure.message}", file=sys.stderr)
    return failure
