"""Separating many files on one machine: decoding, inference and encoding overlapped.

The stages of models/chunking.py, on three threads (transforms/threads.py),
each handing the next at most a batch of chunks so memory stays flat whatever
the tracks' lengths:

    reader thread:  decode -> chunk segments                  (one track after another)
    caller thread:  batches of chunks, across track borders -> STFT, network, masks,
                    inverse STFT (one TensorFlow function, on every core)
    writer thread:  StemWriter (overlap-add, encoders)

ffmpeg decodes and encodes in processes of its own, beside them.

A failing track (bad input, unwritable output) is reported and its partial
stems removed; the others go on. Any other error (a bug) stops the run and is
raised with its traceback, leaving no unfinished stem behind.

With Wiener filtering (``mwf``) every track is read twice: the first pass runs
the network and gathers the filter's whole-track statistics (keeping the
network's estimates in a scratch folder), the second filters each chunk; the
STFT is then taken on the reader thread, the filter and the inverse STFT run
on the writer thread.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from models import decoding, spectral
from models.chunking import segments
from models.encoding import EncodeOptions, remove_partials_of
from models.errors import BeamsplitterError, InputError
from models.ffmpeg_process import IOLimits
from models.separator import Separator
from models.stems import StemSelection, StemWriter
from models.uris import normalize
from models.wiener import WienerStatistics, filter_chunk, softmask
from pipeline.arguments import check_span
from transforms.threads import Background, prefetch_batches


@dataclass
class TrackJob:
    """One input file and where each of its stems goes."""

    source: str
    outputs: dict[str, str]  # instrument -> output path
    offset: float = 0.0
    duration: float | None = None


@dataclass
class TrackResult:
    job: TrackJob
    error: BeamsplitterError | None = None
    seconds: float = 0.0  # audio separated

    @property
    def ok(self) -> bool:
        return self.error is None


class Purpose(enum.Enum):
    """What a track's chunks are read for: once to ``SEPARATE``, or twice with ``mwf``."""

    SEPARATE = enum.auto()
    MWF_STATISTICS = enum.auto()  # the network's estimates, kept, and the filter's whole-track statistics
    MWF_FILTER = enum.auto()  # the first pass's estimates, filtered

    @property
    def needs_model(self) -> bool:
        return self is not Purpose.MWF_FILTER


@dataclass
class _Chunk:
    track: "_Track"
    index: int
    last: bool
    n_samples: int | None
    purpose: Purpose = Purpose.SEPARATE
    samples: np.ndarray | None = None  # SEPARATE: until separated
    stems: np.ndarray | None = None  # SEPARATE
    spectrum: np.ndarray | None = None  # mwf: [T, bins, 2], Wiener's layout
    magnitude: np.ndarray | None = None  # MWF_STATISTICS: until estimated
    estimates: np.ndarray | None = None  # MWF_STATISTICS


@dataclass
class _Track:
    job: TrackJob
    result: TrackResult
    writer: StemWriter | None = None
    failed: bool = False
    scratch: str | None = None  # mwf: the network's estimates from the first pass
    statistics: WienerStatistics | None = None


@dataclass
class _Failure:
    track: _Track
    error: BeamsplitterError


def separate_files(
    separator: Separator,
    jobs: Iterable[TrackJob],
    encoding: EncodeOptions = EncodeOptions(),
    batch_size: int = 4,
    on_progress: Callable[[float], None] = lambda seconds: None,
    on_result: Callable[[TrackResult], None] = lambda result: None,
    mwf: bool = False,
    io: IOLimits = IOLimits(),
    selection: StemSelection | None = None,
) -> list[TrackResult]:
    """Separate every job's file into its stem files; returns one result per job, in order.

    ``io``: how long ffmpeg may deliver or take no data before its track fails, and how many seconds
    of audio a track may have (a longer one fails).
    ``selection``: the stems to synthesize and write (default: every instrument); the jobs' outputs
    are named by its ``names``.
    """
    selection = selection or StemSelection.all_of(separator.instruments)
    tracks = [_Track(job, TrackResult(job)) for job in jobs]
    for track in tracks:
        # What an earlier, killed run left of these stems: no run but this one writes them now.
        for path in track.job.outputs.values():
            remove_partials_of(path)
    passes = (Purpose.MWF_STATISTICS, Purpose.MWF_FILTER) if mwf else (Purpose.SEPARATE,)
    read = _read(separator, tracks, passes, io)
    write = functools.partial(_write, separator, selection, encoding, io, on_progress, on_result)
    # Each chunk in flight holds a few MB (its samples, then its stems; ~30 MB
    # with --mwf, its STFT above all): a batch waiting at each hand-over keeps
    # every stage busy without piling chunks up.
    writer = Background(write, workers=1, limit=batch_size + 1)
    try:
        with contextlib.closing(prefetch_batches(read, depth=batch_size, size=batch_size)) as batches:
            for batch in batches:
                _separate_batch(separator, [c for c in batch if isinstance(c, _Chunk)], batch_size, selection)
                for item in batch:
                    # Untagged: a chunk is let go as soon as it is written, not when its result is collected.
                    for _ in writer.submit(None, item):
                        pass
        for _ in writer.drain():
            pass
    finally:
        writer.close()
        for track in tracks:
            if track.writer is not None:
                track.writer.abort()
            _drop_scratch(track)
    return [t.result for t in tracks]


def _read(separator: Separator, tracks: list[_Track], passes: tuple[Purpose, ...],
          io: IOLimits) -> Iterator[_Chunk | _Failure]:
    """The reader thread's stages: every track's chunks, analysed, or the failure that ended the track."""
    config = separator.config
    for track in tracks:
        try:
            for purpose in passes:
                blocks = decoding.decode(track.job.source, config.sample_rate, track.job.offset, track.job.duration,
                                         stall_timeout=io.stall_timeout, max_duration=io.max_duration)
                for segment in segments(blocks, separator.geometry):
                    chunk = _Chunk(track, segment.index, segment.last, segment.n_samples, purpose)
                    if purpose is Purpose.SEPARATE:
                        chunk.samples = segment.samples
                    else:
                        spectrum, magnitude = spectral.analyze(segment.samples, config)
                        chunk.spectrum = np.moveaxis(spectrum.numpy(), 0, -1)
                        if purpose.needs_model:
                            chunk.magnitude = magnitude.numpy()
                    yield chunk
        except BeamsplitterError as exc:
            yield _Failure(track, exc)


def _separate_batch(separator: Separator, chunks: list[_Chunk], batch_size: int, selection: StemSelection) -> None:
    """The caller thread's stage: the model, on chunks of any tracks at once."""
    separating = [c for c in chunks if c.purpose is Purpose.SEPARATE]
    if separating:
        stems = separator.separate_chunks(np.stack([c.samples for c in separating]), batch_size, selection.groups)
        for i, chunk in enumerate(separating):
            chunk.stems, chunk.samples = stems[:, i], None
    gathering = [c for c in chunks if c.purpose is Purpose.MWF_STATISTICS]
    if gathering:
        estimates = separator.estimate(np.stack([c.magnitude for c in gathering]), batch_size)
        for i, chunk in enumerate(gathering):
            chunk.estimates, chunk.magnitude = estimates[:, i], None


def _write(separator: Separator, selection: StemSelection, encoding: EncodeOptions, io: IOLimits, on_progress, on_result,
           item: _Chunk | _Failure) -> None:
    """The writer thread's stages: a chunk's stems into its track's StemWriter (or its track failed)."""
    if isinstance(item, _Failure):
        _fail(item.track, item.error, on_result)
        return
    chunk, track = item, item.track
    if track.failed:
        return
    config = separator.config
    try:
        if chunk.purpose is Purpose.MWF_STATISTICS:
            _gather_statistics(separator, chunk)
            return
        if track.writer is None:
            track.writer = StemWriter(track.job.outputs, separator.geometry, config.sample_rate, encoding,
                                      io.stall_timeout)
        stems = _filtered_stems(separator, selection, chunk) if chunk.purpose is Purpose.MWF_FILTER else chunk.stems
        seconds = track.writer.add(chunk.index, stems, chunk.n_samples) / config.sample_rate
        track.result.seconds += seconds
        on_progress(seconds)
        if chunk.last:
            track.writer.close()
            track.writer = None
            _drop_scratch(track)
            on_result(track.result)
    except BeamsplitterError as exc:
        _fail(track, exc, on_result)


def _gather_statistics(separator: Separator, chunk: _Chunk) -> None:
    track = chunk.track
    if track.scratch is None:
        track.scratch = tempfile.mkdtemp(prefix="beamsplitter-mwf-")
        track.statistics = WienerStatistics(len(separator.instruments), separator.config.n_bins)
    np.save(os.path.join(track.scratch, f"{chunk.index}.npy"), chunk.estimates)
    estimates = separator.full_band(chunk.estimates)
    track.statistics.add(softmask(estimates, chunk.spectrum), chunk.spectrum)


def _filtered_stems(separator: Separator, selection: StemSelection, chunk: _Chunk) -> np.ndarray:
    track = chunk.track
    estimates = separator.full_band(np.load(os.path.join(track.scratch, f"{chunk.index}.npy")))
    filtered = filter_chunk(estimates, chunk.spectrum, track.statistics.spatial_covariances(),
                            track.statistics.scale)
    # Every source is filtered (the filter needs them all); only the selection's are inverted.
    filtered = np.stack([filtered[list(group)].sum(axis=0) for group in selection.groups])
    return spectral.istft(np.moveaxis(filtered, -1, -3), separator.config.frame_length,
                          separator.config.frame_step).numpy()


def _drop_scratch(track: _Track) -> None:
    if track.scratch:
        shutil.rmtree(track.scratch, ignore_errors=True)
        track.scratch = None


def _fail(track: _Track, error: BeamsplitterError, on_result):
    track.failed = True
    _drop_scratch(track)
    if track.writer is not None:
        track.writer.abort()  # also withdraws stems of this track already published
        track.writer = None
    track.result.error = error
    on_result(track.result)


def stem_path(source: str, output_dir: str, filename_format: str, instrument: str, codec: str) -> str:
    """Where ``instrument`` of ``source`` goes, by Spleeter's ``-f`` placeholders.

    ``{filename}`` is the source's name without extension, ``{foldername}``
    the name of its folder, ``{instrument}`` and ``{codec}`` as given.
    """
    filename = posixpath.splitext(posixpath.basename(source))[0]
    foldername = posixpath.basename(posixpath.dirname(source))
    try:
        relative = filename_format.format(filename=filename, foldername=foldername, instrument=instrument, codec=codec)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"filename format {filename_format!r}: {exc}; use {{filename}}, {{foldername}}, {{instrument}}, {{codec}}"
        ) from None
    return f"{output_dir.rstrip('/')}/{relative}"


def track_jobs(sources: list[str], output_dir: str, filename_format: str, instruments, codec: str,
               offset: float = 0.0, duration: float | None = None) -> list[TrackJob]:
    """One job per source; refuses two stems that would land on the same path, and a bad offset or duration."""
    check_span(offset, duration)
    # One form for every path (models/uris.py), compared as real paths: a stem may land on no input either.
    sources, output_dir = [normalize(source) for source in sources], normalize(output_dir)
    inputs = {_real(source): source for source in sources}
    jobs, owners = [], {}
    for source in sources:
        outputs = {name: normalize(stem_path(source, output_dir, filename_format, name, codec))
                   for name in instruments}
        for path in outputs.values():
            real = _real(path)
            if real in inputs:
                raise InputError(f"{source}: its stem {path} would overwrite the input {inputs[real]}; "
                                 "choose another output folder or filename format")
            if real in owners:
                raise InputError(
                    f"{source}: its stem {path} would overwrite one of {owners[real]}; "
                    "add {foldername} or {instrument} to the filename format"
                )
            owners[real] = source
        jobs.append(TrackJob(source, outputs, offset, duration))
    return jobs


def _real(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)
