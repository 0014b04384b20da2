"""The `beamsplitter` command as a user runs it."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models import audio

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")


def run(*args):
    return subprocess.run([BEAMSPLITTER, *args], capture_output=True, text=True, timeout=600)


def test_separate_good_and_bad_inputs(tmp_path, checkpoint_2stems, music_track):
    notes = tmp_path / "notes.ogg"
    notes.write_text("not audio")
    missing = tmp_path / "missing.wav"
    result = run("separate", str(music_track), str(notes), str(missing), "-o", str(tmp_path / "out"),
                 "--checkpoint", str(checkpoint_2stems), "-c", "flac", "-d", "7.5",
                 "-f", "{foldername}/{filename}/{instrument}.{codec}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {notes}: not decodable audio (")
    assert errors[1] == f"error: {missing}: no such file"
    folder = tmp_path / "out" / music_track.parent.name / music_track.stem
    assert sorted(p.name for p in folder.iterdir()) == ["accompaniment.flac", "vocals.flac"]
    stems = [audio.load(str(folder / f"{n}.flac"), 44100) for n in ("vocals", "accompaniment")]
    assert [len(s) for s in stems] == [int(7.5 * 44100)] * 2
    mix = audio.load(str(music_track), 44100, duration=7.5)
    # the two stems add back up to the mix (masks sum to one below F)
    residual = mix - stems[0] - stems[1]
    assert 10 * np.log10(np.sum(mix ** 2) / np.sum(residual ** 2)) > 20


def test_separate_stalled_source_fails_alone(tmp_path, checkpoint_2stems, music_track, stalled_source):
    stalled = stalled_source(tmp_path / "stalled.wav", seconds=2)
    result = run("separate", str(stalled.path), str(music_track), "-o", str(tmp_path / "out"),
                 "--checkpoint", str(checkpoint_2stems), "-d", "5", "--stall-timeout", "3")
    assert result.returncode == 1, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert errors == [f"error: {stalled.path}: no data from the source for 3 s (--stall_timeout); decoding stopped"]
    assert sorted(p.name for p in (tmp_path / "out" / music_track.stem).iterdir()) == ["accompaniment.wav",
                                                                                       "vocals.wav"]
    assert not (tmp_path / "out" / "stalled").exists()


def test_whole_track_by_default(tmp_path, checkpoint_2stems, music_track):
    result = run("separate", str(music_track), "-o", str(tmp_path), "--checkpoint", str(checkpoint_2stems),
                 "-s", "1.5")
    assert result.returncode == 0, result.stderr
    vocals = audio.load(str(tmp_path / music_track.stem / "vocals.wav"), 44100)
    assert len(vocals) == len(audio.load(str(music_track), 44100)) - int(1.5 * 44100)


@pytest.mark.parametrize("args,message", [
    (["-p", "spleeter:3stems"], "error: unknown model configuration 'spleeter:3stems'"),
    (["-f", "{filename}.{codec}"], "would overwrite one of"),
    (["--stall-timeout", "0"], "error: --stall-timeout 0: give the seconds ffmpeg may go without data, above 0"),
])
def test_usage_errors_are_one_line(tmp_path, music_track, args, message):
    result = run("separate", str(music_track), str(music_track), "-o", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_model(tmp_path, checkpoint_2stems):
    result = run("export-model", str(tmp_path / "saved"), "--checkpoint", str(checkpoint_2stems))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


@pytest.mark.parametrize("args,message", [
    (["--fan_out=tracks", "--inference_accelerator=type:nvidia-l4;count:1"], "cannot go with --inference_accelerator"),
    (["--model_copies=0"], "--model_copies 0: give at least 1"),
    (["--stall_timeout=-5"], "--stall_timeout -5: give the seconds ffmpeg may go without data, above 0"),
])
def test_run_refuses_option_combinations_before_anything_runs(tmp_path, args, message):
    (tmp_path / "m.csv").write_text("track_id,uri\na,a.wav\n")
    result = run("run", "--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("glob,output,refused", [
    ("music/**/*.mp3", "music/stems", True),
    ("music/**/*.mp3", "music", True),
    ("music/*/*.mp3", "music/out", True),
    ("music/**/*.mp3", "stems", False),
    ("music/**/*.mp3", "musical", False),
    ("*.wav", "out", False),  # lists only the folder's own files, never the stems below out/
    ("gs://b/in/**", "gs://b/in/out", True),
    ("gs://b/in/**", "gs://b/out", False),
])
def test_an_output_inside_the_folder_an_input_glob_lists_is_refused(tmp_path, monkeypatch, glob, output, refused):
    from models.errors import InputError
    from pipeline.options import BeamsplitterOptions

    monkeypatch.chdir(tmp_path)
    options = BeamsplitterOptions(["--input", glob, "--output", output])
    if refused:
        with pytest.raises(InputError, match=re.escape(f"--output {output} lies inside the folder that --input {glob} lists")):
            options.check()
    else:
        options.check()

def test_an_unreachable_object_store_fails_at_once_in_one_line(tmp_path):
    """Without a network a gs:// manifest hung for two minutes, then printed a credentials traceback."""
    from tests import services

    closed = services.free_port()  # nothing listens there
    env = dict(os.environ, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{closed}", NO_GCE_CHECK="true")
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "beamsplitter"), "run", "--manifest",
                             "gs://catalogue/m.csv", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: gs://catalogue/m.csv: cannot reach Cloud Storage at 127.0.0.1:{closed} "
        "(Connection refused); is there a network?"]
    assert time.monotonic() - started < 60


def test_separate_names_every_folder_it_wrote_to(tmp_path, checkpoint_2stems, music_track):
    """With -f '{instrument}/...' the stems land in one folder per instrument; the message named only one."""
    result = run("separate", str(music_track), "-o", str(tmp_path), "--checkpoint", str(checkpoint_2stems),
                 "-d", "3", "-f", "{instrument}/{filename}.{codec}")
    assert result.returncode == 0, result.stderr
    assert f"{music_track}: 2 stems in {tmp_path}/accompaniment, {tmp_path}/vocals" in result.stderr
