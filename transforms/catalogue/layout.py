"""Where a run writes, under the output prefix::

    PREFIX/
      stems/<model>/_MODEL.json                      the configuration and checkpoint digest
      stems/<model>/_LEASE.json                      held by the run writing here, while it runs
      stems/<model>/<track_id>/<stem>.<codec>         one file per stem: an instrument, or no_<instrument>
      stems/<model>/<track_id>/_SUCCESS.json          completion record, written last
      metadata/<model>/run-<commit>-*.parquet         one row per (track, instrument)
      metadata/<model>/_committed/run-<commit>        written once that commit's metadata has landed
      metadata/<model>/_runs/run-<run_id>.json        a finished run's figures (read by `beamsplitter report`)
      failures/run-<commit>-*.parquet                 one row per failed track or row
      failures/run-<commit>-verdict.json              a distributed run failed over --max_failed_fraction
      scratch/<model>/<run_id>/                       separated chunks between inference and
                                                      reassembly (--fan_out=chunks), removed as
                                                      each track is written (--scratch_location
                                                      puts scratch/ elsewhere)

``<model>`` names the configuration and the checkpoint (``4stems-1a2b3c4d5e6f``),
and the precision when it is not fp32 (``4stems-1a2b3c4d5e6f-bf16``), so another
model, other weights or another precision never mixes with earlier output. A track is
done exactly when its completion record exists. A run's metadata lands as a
whole in one metadata commit (``<commit>`` is the run id), or one per wave on
the local runner (``<run_id>-w0003``); its failures are written under the same
name, without a marker. The record carries the track's metadata rows and its
commit: a run killed before a commit landed leaves no ``_committed`` marker for
it, and the next run lists those tracks' rows again (and removes any partial
metadata files the dead run left), moving each record to its own commit before
that commit can land: the rows land once, whenever runs are killed. A run id
names one run under a prefix: a run refuses one whose commits are there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from models.encoding import CODECS
from models.precision import DEFAULT_PRECISION
from transforms.catalogue.storage import join, literal_glob

RECORD = "_SUCCESS.json"
MODEL_CARD = "_MODEL.json"
COMMITTED = "_committed"
RUNS = "_runs"
LEASE = "_LEASE.json"
# Names the layout writes beside and inside the tracks' folders: a track_id with
# one of them as a path component would mix its folder with the layout's own
# files (track "a/_SUCCESS.json" would be a folder where track "a" keeps its record).
RESERVED = frozenset({RECORD, MODEL_CARD, COMMITTED, LEASE})


def stem_file(instrument: str, codec: str) -> str:
    """A stem's file name in its track's folder."""
    return f"{instrument}.{codec}"


def is_stem_file(name: str, instruments) -> bool:
    """Whether the file name ``name`` is that of a stem of one of ``instruments``, in any codec.

    Only such files are a track's stems: not the layout's own names, nor the
    folders of tracks whose ids extend this one's (``a/b`` inside ``a``).
    """
    instrument, dot, codec = name.rpartition(".")
    return bool(dot) and instrument in instruments and codec in CODECS


# A Parquet file of a metadata commit's metadata or failures, as Beam's file sink names them.
_COMMIT_FILE = re.compile(r"^run-(?P<commit>.+?)-\d{5}-of-\d{5}\.parquet$")


def commit_name(run_id: str, wave: int | None = None) -> str:
    """The metadata commit of one pipeline: the run's own, or wave ``wave``'s on the local runner."""
    return run_id if wave is None else f"{run_id}-w{wave:04d}"


def is_commit_of(commit: str, run_id: str) -> bool:
    """Whether ``commit`` is one that run ``run_id`` writes (``commit_name(run_id, wave)`` for some wave)."""
    return commit == run_id or re.fullmatch(re.escape(run_id) + r"-w\d{4,}", commit) is not None


def commit_of(uri: str) -> str | None:
    """The metadata commit that a metadata or failure file ``uri`` belongs to (None: no such file)."""
    match = _COMMIT_FILE.match(uri.rsplit("/", 1)[-1])
    return match["commit"] if match else None


def marker_commit(marker_uri: str) -> str:
    """The metadata commit that a ``Layout.commit_marker`` names."""
    return marker_uri.rsplit("/run-", 1)[1]


def model_folder(config_name: str, checkpoint_sha256: str, precision: str = DEFAULT_PRECISION) -> str:
    name = config_name.split(":", 1)[-1]
    name = f"{name}-{checkpoint_sha256[:12]}" if checkpoint_sha256 else name
    return name if precision == DEFAULT_PRECISION else f"{name}-{precision}"  # fp32's folders as they always were


@dataclass(frozen=True)
class Layout:
    prefix: str
    model: str  # model_folder(...)
    # Where --fan_out=chunks parks chunks: PREFIX/scratch by default, or a location of its own
    # (--scratch_location), say a bucket that deletes old objects and keeps no deleted ones.
    scratch_location: str | None = None

    def track_dir(self, track_id: str) -> str:
        return join(self.prefix, "stems", self.model, *track_id.split("/"))

    def stem(self, track_id: str, instrument: str, codec: str) -> str:
        return join(self.track_dir(track_id), stem_file(instrument, codec))

    def model_card(self) -> str:
        return join(self.prefix, "stems", self.model, MODEL_CARD)

    def lease(self) -> str:
        """Held by the one run writing this model's output; see transforms/catalogue/lease.py."""
        return join(self.prefix, "stems", self.model, LEASE)

    def record(self, track_id: str) -> str:
        return join(self.track_dir(track_id), RECORD)

    def metadata(self, commit: str) -> str:
        return join(self.prefix, "metadata", self.model, f"run-{commit}")

    def commit_marker(self, commit: str) -> str:
        # Under a "_" folder: dataset readers (pyarrow, Spark) skip it when reading metadata/.
        return join(self.metadata_folder(), COMMITTED, f"run-{commit}")

    def run_summary(self, run_id: str) -> str:
        """A finished run's figures (done, skipped, failed by stage, audio and wall seconds), as JSON.

        Beside the commit markers, not among them: a marker's name is a commit, and a run may have several.
        """
        return join(self.metadata_folder(), RUNS, f"run-{run_id}.json")

    def run_summaries(self) -> tuple[str, str]:
        """Where to look for run summaries: (folder, glob), as ``storage.find`` takes them."""
        return self.metadata_folder(), f"{RUNS}/run-*.json"

    def metadata_folder(self) -> str:
        return join(self.prefix, "metadata", self.model)

    def commit_markers(self) -> tuple[str, str]:
        """Where to look for commit markers: (folder, glob), as ``storage.find`` takes them."""
        return self.metadata_folder(), f"{COMMITTED}/run-*"

    def run_traces(self, run_id: str) -> tuple[tuple[str, str, str], ...]:
        """Where run ``run_id``'s commits would lie, under every model: (what, folder, glob), the folder
        and glob as ``storage.find`` takes them, for its metadata files, commit markers and failure
        files. Others' that start alike match too: ``commit_of`` or ``marker_commit``, then
        ``is_commit_of``, tell them apart."""
        run = literal_glob(f"run-{run_id}")
        return (("metadata", join(self.prefix, "metadata"), f"*/{run}*.parquet"),
                ("commit marker", join(self.prefix, "metadata"), f"*/{COMMITTED}/{run}*"),
                ("failures", join(self.prefix, "failures"), f"{run}*.parquet"))

    def failures(self, commit: str) -> str:
        return join(self.prefix, "failures", f"run-{commit}")

    def verdict(self, commit: str) -> str:
        """Written when a distributed run fails its job over ``--max_failed_fraction``: its counts."""
        return join(self.prefix, "failures", f"run-{commit}-verdict.json")

    def scratch_root(self) -> str:
        return self.scratch_location or join(self.prefix, "scratch")

    def scratch(self, run_id: str) -> str:
        return join(self.scratch_root(), self.model, run_id)

    def scratch_track(self, run_id: str, track_id: str) -> str:
        # A digest, not the track id: one flat, safe folder name whatever the id holds.
        return join(self.scratch(run_id), hashlib.sha1(track_id.encode()).hexdigest()[:20])

    def scratch_chunk(self, run_id: str, track_id: str, index: int, kind: str) -> str:
        """Chunk ``index`` of a track, ``kind`` "in" (decoded) or "out" (separated)."""
        return join(self.scratch_track(run_id, track_id), f"{kind}-{index:06d}.npy")
