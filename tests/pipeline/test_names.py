"""Any file name a filesystem allows works, by manifest and by --input glob, locally, on gs:// and on s3://.

Music catalogues are full of brackets, quotes, commas, accents and worse; a
name is never a glob, never an ffmpeg option or protocol, never URL syntax.
"""

from __future__ import annotations

import csv
import subprocess

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models.ffmpeg_process import ffmpeg_binary
from pipeline import demo
from pipeline.run import run
from tests import services

pytestmark = pytest.mark.slow  # a 3-minute track, separated locally, on gs:// and on s3://

NAMES = [
    "Café del Mar – l'été, 1999 [Remastered 2011].flac",  # three minutes: a song, not a jingle
    "Song [Live] (feat. X).wav",
    'It\'s "Quoted", Really.wav',
    "-leading dash.wav",
    "Artist: Title.wav",  # "Artist:" reads as a protocol to ffmpeg
    "take?*.wav",
    "100% #1 hit & more + more.wav",  # URL syntax
    "two  spaces .wav",
    "日本語のトラック.wav",
]


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names") / "music"
    folder.mkdir()
    for seed, name in enumerate(NAMES):
        seconds = 180.0 if seed == 0 else 8.0
        source = demo.make_track(folder / f"src{seed}.wav", seconds=seconds, seed=70 + seed)
        if name.endswith(".wav"):
            source.rename(folder / name)
        else:
            subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(source), str(folder / name)], check=True)
            source.unlink()
    return folder


# The GCS emulator's download links leave object names unescaped, so "?" and "#" end its
# URL early: those two names cannot be read back from it at all. (GCS escapes them.)
GCS_NAMES = [name for name in NAMES if not set(name) & set("?#")]


def write_manifest(path, prefix: str, names=NAMES) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "uri"])
        writer.writerows((name, f"{prefix}/{name}" if prefix else name) for name in names)
    return str(path)


def stems(output: str, names=NAMES) -> dict[str, bytes]:
    """track_id/instrument -> stem bytes, found through each track's completion record."""
    (card,) = [m.path for m in FileSystems.match([FileSystems.join(output, "stems/*/_MODEL.json")])[0].metadata_list]
    model = card.rsplit("/", 2)[-2]
    found = {}
    for name in names:
        for instrument in ("vocals", "accompaniment"):
            # Built by string: a name like "take?*.wav" must not be taken as a pattern here either.
            uri = "/".join((output, "stems", model, name, f"{instrument}.wav"))
            with FileSystems.open(uri, compression_type="uncompressed") as f:
                found[f"{name}/{instrument}"] = f.read()
    return found


def run_twice(capsys, *args, tracks=len(NAMES)) -> None:
    assert run(list(args)).exit_status == 0
    assert f"{tracks} tracks done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert run(list(args)).exit_status == 0  # every name is found done again: stat'ed literally
    assert f"0 tracks done, {tracks} skipped, 0 failed" in capsys.readouterr().out


@pytest.fixture(scope="module")
def local_stems(named, checkpoint_2stems, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    manifest = write_manifest(named.parent / "m.csv", "music")
    assert run(["--manifest", manifest, "--output", str(out),
                "--checkpoint", str(checkpoint_2stems)]).exit_status == 0
    return stems(str(out))


def test_local_names_by_input_glob(named, checkpoint_2stems, local_stems, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(named)  # relative names: "-leading dash.wav" as ffmpeg would see it first
    run_twice(capsys, "--input", "*.*", "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint_2stems))
    assert stems(str(tmp_path / "out")) == local_stems


def test_names_on_gcs(named, checkpoint_2stems, local_stems, capsys):
    expected = {k: v for k, v in local_stems.items() if k.rsplit("/", 1)[0] in GCS_NAMES}
    with services.gcs_emulator() as gcs:
        for name in GCS_NAMES:
            with FileSystems.create(gcs.url(f"music/{name}")) as out:
                out.write((named / name).read_bytes())
        manifest = write_manifest(named.parent / "gs.csv", gcs.url("music"), GCS_NAMES)
        base = ["--checkpoint", str(checkpoint_2stems)]
        run_twice(capsys, "--manifest", manifest, "--output", gcs.url("by-manifest"), *base, tracks=len(GCS_NAMES))
        assert stems(gcs.url("by-manifest"), GCS_NAMES) == expected
        # A redo withdraws each record and replaces each stem by name, never by pattern.
        assert run(["--manifest", manifest, "--output", gcs.url("by-manifest"), *base,
                    "--force"]).exit_status == 0
        assert f"{len(GCS_NAMES)} tracks done, 0 skipped, 0 failed" in capsys.readouterr().out
        assert stems(gcs.url("by-manifest"), GCS_NAMES) == expected
        run_twice(capsys, "--input", gcs.url("music/*"), "--output", gcs.url("by-glob"), *base, tracks=len(GCS_NAMES))
        assert stems(gcs.url("by-glob"), GCS_NAMES) == expected


def test_names_on_s3(named, checkpoint_2stems, local_stems, capsys):
    with services.s3_server("catalogue") as s3:
        for name in NAMES:
            s3.client.upload_file(str(named / name), "catalogue", f"music/{name}")
        base = ["--checkpoint", str(checkpoint_2stems), *s3.beam_options()]
        try:
            FileSystems.set_options(PipelineOptions(s3.beam_options()))
            manifest = write_manifest(named.parent / "s3.csv", "s3://catalogue/music")
            run_twice(capsys, "--manifest", manifest, "--output", "s3://catalogue/by-manifest", *base)
            assert stems("s3://catalogue/by-manifest") == local_stems
            run_twice(capsys, "--input", "s3://catalogue/music/*", "--output", "s3://catalogue/by-glob", *base)
            assert stems("s3://catalogue/by-glob") == local_stems
        finally:
            FileSystems.set_options(PipelineOptions([]))
