"""JobSettings: what the steps of a catalogue job work with, settled once, before any worker starts.

pipeline/run.py builds it from the job's options and what the driver resolved
(the checkpoint's digest, the run's id, the commits of earlier runs), and hands
it whole to each step; it travels to the workers pickled with them. No step
reads the options again or takes its settings one by one, and how work spreads
over workers is a named value (``FanOut``) that the steps branch on.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from models.config import SeparationConfig, load_config
from models.encoding import EncodeOptions
from models.ffmpeg_process import IOLimits
from models.stems import StemSelection
from transforms.catalogue.layout import Layout
from transforms.stash import Scratch


class FanOut(enum.Enum):
    """How a job's work spreads over workers (``--fan_out``)."""

    NONE = "none"  # one process: the local runner
    TRACKS = "tracks"  # each worker decodes, separates and writes whole tracks; references alone are shuffled
    CHUNKS = "chunks"  # model chunks go wherever inference runs, parked in scratch storage on their way


@dataclass(frozen=True)
class JobSettings:
    model: str  # the configuration's name or JSON file (--model)
    checkpoint: str | None  # as given (--checkpoint); None: the cache or the release
    checkpoint_sha256: str  # the weights every worker must load
    precision: str
    model_id: str  # the metadata's `model`: configuration, checkpoint digest, precision
    layout: Layout
    run_id: str
    encoding: EncodeOptions
    io: IOLimits  # what decoding and encoding a track may cost
    selection: StemSelection  # the stems written
    fan_out: FanOut
    batch_size: int  # model chunks per inference call
    accelerator: str | None = None  # the resource hint of the steps that run the model
    model_copies: int | None = None  # models per machine shared by its SDK processes; None: one per process
    force: bool = False  # redo done tracks
    landed_commits: frozenset = frozenset()  # the metadata commits of earlier runs that landed
    lease_token: str | None = None  # confirmed before each metadata commit (None: no lease held)

    @functools.cached_property
    def config(self) -> SeparationConfig:
        return load_config(self.model)

    @property
    def scratch(self) -> Scratch | None:
        """Where chunks wait between the steps with chunk fan-out; None otherwise."""
        return Scratch(self.layout, self.run_id) if self.fan_out is FanOut.CHUNKS else None

    @property
    def tracks_at_once(self) -> int:
        """Tracks each worker process decodes at once: with an accelerator and whole tracks, enough to
        fill the model's batches (one chunk of each, at worst); else one."""
        return self.batch_size if self.accelerator and self.fan_out is not FanOut.CHUNKS else 1
