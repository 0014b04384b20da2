"""Training manifests: which mixture goes with which stems.

Spleeter's training CSV layout, in any manifest format (CSV, JSON Lines,
Parquet; local, gs:// or s3://): one row per track, the mixture in
``mix_path`` (or ``mixture``) and each instrument of the configuration in
``<instrument>_path``; other columns (Spleeter's ``duration``...) are ignored.
Relative paths are relative to the manifest's folder. Pure Python, no Beam.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import InputError
from transforms.catalogue import manifest

MIX_COLUMNS = ("mix_path", "mixture")


@dataclass(frozen=True)
class TrainingTrack:
    """One row: ``name`` seeds its crops (the mixture as the manifest writes it, so moving the
    dataset changes no crop), ``mix`` and ``stems`` are resolved URIs."""

    row: int
    name: str
    mix: str
    stems: tuple[tuple[str, str], ...]

    def sources(self) -> tuple[tuple[str, str], ...]:
        """``(source, uri)``: the mixture as ``mix``, then every instrument."""
        return (("mix", self.mix),) + self.stems


def to_training_track(number: int, fields: dict, instruments: tuple[str, ...], manifest_uri: str) -> TrainingTrack:
    def value(column):
        cell = fields.get(column)
        return None if cell is None or str(cell).strip() == "" else str(cell).strip()

    mix_column = next((c for c in MIX_COLUMNS if c in fields), None)
    if mix_column is None:
        raise InputError(f"{manifest_uri} row {number}: no mix_path (or mixture) column")
    missing = [f"{name}_path" for name in instruments if f"{name}_path" not in fields]
    if missing:
        raise InputError(f"{manifest_uri} row {number}: no column {', '.join(missing)}")
    empty = [c for c in [mix_column] + [f"{name}_path" for name in instruments] if value(c) is None]
    if empty:
        raise InputError(f"{manifest_uri} row {number}: empty {', '.join(empty)}")
    try:
        mix = manifest.resolve_uri(value(mix_column), manifest_uri)
        stems = tuple((name, manifest.resolve_uri(value(f"{name}_path"), manifest_uri)) for name in instruments)
    except InputError as exc:
        raise InputError(f"{manifest_uri} row {number}: {exc}") from None
    return TrainingTrack(number, value(mix_column), mix, stems)


def read_training_manifest(uri: str, instruments: tuple[str, ...]) -> list[TrainingTrack]:
    """Every track of the manifest at ``uri``; an ``InputError`` lists every unusable row."""
    tracks, problems = [], []
    # Required columns are checked row by row: the mixture's has two names.
    for number, fields in manifest.read_manifest(uri, required=()):
        if isinstance(fields, InputError):
            problems.append(str(fields))
            continue
        try:
            tracks.append(to_training_track(number, fields, instruments, uri))
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("; ".join(problems))
    if not tracks:
        raise InputError(f"{uri}: no tracks")
    return tracks
