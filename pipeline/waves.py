"""The local runner's waves: the catalogue read once, checked in the driver, cut into small pipelines.

The local runner reports progress only when a pipeline ends, and its
FnApiRunner holds every element of a pipeline in memory; so a local run goes
in waves, one pipeline each. The driver reads the catalogue once into a
``CatalogueIndex`` (first row of a track id wins, on disk), then walks it in
order, checking each track with ``transforms.skip.check`` on a few threads.
A wave is what the walk met until it held ``--local_wave_tracks`` tracks to
separate (or ``MAX_WAVE_ROWS`` rows): its tracks to do, its failure rows and
the completion records whose rows it recovers go into its pipeline; tracks
already done are only counted. A re-run of a done catalogue of a million rows
thus runs no pipeline for its done tracks, where a wave per 8 rows would run
125,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from transforms.catalogue.index import CatalogueIndex
from transforms.catalogue.manifest import Failure
from transforms.job import JobSettings
from transforms.skip import check
from transforms.threads import ordered_map

# Bounds what a wave's pipeline holds when the catalogue is mostly done or bad rows.
MAX_WAVE_ROWS = 10_000


@dataclass
class Wave:
    """One pipeline's share of the catalogue."""

    number: int
    todo: list = field(default_factory=list)  # (Track, fingerprint) to separate
    failures: list = field(default_factory=list)  # Failure rows: invalid, duplicate, unreadable source
    recovered: list = field(default_factory=list)  # completion records of done tracks whose commit never landed
    skipped: int = 0
    rows: int = 0  # catalogue rows this wave settles

    def needs_pipeline(self) -> bool:
        return bool(self.todo or self.failures or self.recovered)


def waves(index: CatalogueIndex, job: JobSettings, tracks_per_wave: int) -> Iterator[Wave]:
    """The catalogue's waves in catalogue order; every row of ``index`` is in exactly one (done tracks
    as ``check`` says for ``job``)."""
    def verdict(entry):
        return entry if isinstance(entry, Failure) else check(entry, job)

    wave = Wave(0)
    for item in ordered_map(verdict, index):
        wave.rows += 1
        if isinstance(item, Failure):
            wave.failures.append(item)
        elif item.failure:
            wave.failures.append(item.failure)
        elif item.fingerprint is not None:
            wave.todo.append((item.track, item.fingerprint))
        else:
            wave.skipped += 1
            if item.recover:
                wave.recovered.append(item.record)
        if len(wave.todo) >= max(1, tracks_per_wave) or wave.rows >= MAX_WAVE_ROWS:
            yield wave
            wave = Wave(wave.number + 1)
    if wave.rows:
        yield wave
