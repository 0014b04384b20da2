"""The `beamsplitter` command as a user runs it."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models import decoding

REPO = Path(__file__).resolve().parents[2]
BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")


def run(*args):
    return subprocess.run([BEAMSPLITTER, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # separations in processes of their own
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
    stems = [decoding.load(str(folder / f"{n}.flac"), 44100) for n in ("vocals", "accompaniment")]
    assert [len(s) for s in stems] == [int(7.5 * 44100)] * 2
    mix = decoding.load(str(music_track), 44100, duration=7.5)
    # the two stems add back up to the mix (masks sum to one below F)
    residual = mix - stems[0] - stems[1]
    assert 10 * np.log10(np.sum(mix ** 2) / np.sum(residual ** 2)) > 20


@pytest.mark.slow  # separations in processes of their own
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


@pytest.mark.slow  # separations in processes of their own
def test_separate_refuses_a_93_kb_file_of_two_hours_and_clears_what_a_killed_run_left(tmp_path, checkpoint_2stems,
                                                                                      music_track):
    """Two hours of digital silence fit in 93 KB of FLAC. Without a limit, `separate` writes 1.3 GB
    per stem; killed, it leaves its temporary files. The next run, under the default limit, refuses
    the file before decoding it and removes what the killed one left."""
    from tests.conftest import kill_while_writing, write_silent_flac

    silence = write_silent_flac(tmp_path / "silence.flac", 7200.0)
    assert silence.stat().st_size < 96_000
    out = tmp_path / "out"
    left = kill_while_writing([BEAMSPLITTER, "separate", str(silence), "-o", str(out), "--checkpoint",
                               str(checkpoint_2stems), "--max-duration", "0"], out)
    assert len(left) == 2, "the run should have been killed while writing its stems"

    result = run("separate", str(silence), str(music_track), "-o", str(out), "--checkpoint", str(checkpoint_2stems))
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {silence}: lasts 7200.0 s, longer than --max_duration 5400 s; not decoded"]
    assert list(out.rglob("*.part")) == []
    assert os.listdir(out / "silence") == []
    assert sorted(os.listdir(out / music_track.stem)) == ["accompaniment.wav", "vocals.wav"]

@pytest.mark.slow  # separations in processes of their own
def test_whole_track_by_default(tmp_path, checkpoint_2stems, music_track):
    result = run("separate", str(music_track), "-o", str(tmp_path), "--checkpoint", str(checkpoint_2stems),
                 "-s", "1.5")
    assert result.returncode == 0, result.stderr
    vocals = decoding.load(str(tmp_path / music_track.stem / "vocals.wav"), 44100)
    assert len(vocals) == len(decoding.load(str(music_track), 44100)) - int(1.5 * 44100)


@pytest.mark.parametrize("args,message", [
    (["-p", "spleeter:3stems"], "error: unknown model configuration 'spleeter:3stems'"),
    (["-f", "{filename}.{codec}"], "would overwrite one of"),
    (["--stall-timeout", "0"], "error: --stall_timeout 0: give the seconds ffmpeg may go without data, above 0"),
    (["--max-duration", "-1"], "error: --max_duration -1: give the longest track to decode in seconds, or 0 for "
                               "no limit"),
    # Options that ffmpeg would refuse only at encoding, after every track was decoded and separated
    # (issue 11, items 6 and 7), or blame on the audio (item 8): refused before the model loads.
    (["-b", "999x"], "error: --bitrate 999x: give bits per second as digits with an optional k or M"),
    (["-b", "0"], "error: --bitrate 0: give a bitrate above 0"),
    (["-c", "flac", "--sample-format", "f32"], "error: --sample_format f32 cannot go with --codec flac: FLAC has "
                                               "no float samples"),
    (["-s", "-3"], "error: --offset -3: give the start in seconds, 0 or more"),
    (["-d", "-5"], "error: --duration -5: give the seconds to separate, above 0"),
    (["-d", "0"], "error: --duration 0: give the seconds to separate, above 0"),
    (["--batch-size", "0"], "error: --inference_batch_size 0: give at least 1"),
])
def test_usage_errors_are_one_line(tmp_path, music_track, args, message):
    result = run("separate", str(music_track), str(music_track), "-o", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a SavedModel exported in a process of its own
def test_export_model(tmp_path, checkpoint_2stems):
    result = run("export-model", str(tmp_path / "saved"), "--checkpoint", str(checkpoint_2stems))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


@pytest.mark.parametrize("args,message", [
    (["--model_copies=0"], "--model_copies 0: give at least 1"),
    (["--stall_timeout=-5"], "--stall_timeout -5: give the seconds ffmpeg may go without data, above 0"),
    (["--max-duration=nan"], "--max_duration nan: give the longest track to decode in seconds, or 0 for no limit"),
    # Encoding options, checked before the first track is decoded (issue 11, items 6 and 7).
    (["-c", "xyz"], "--codec xyz: unknown codec (choose from wav, flac, mp3, ogg, m4a, wma)"),
    (["--sample_format", "s8"], "--sample_format s8: unknown sample format (choose from s16, s24, f32)"),
    (["-b", "999x"], "--bitrate 999x: give bits per second as digits with an optional k or M"),
    (["-c", "flac", "--sample_format=f32"], "--sample_format f32 cannot go with --codec flac"),
    # The README's spelling reaches the job (it was dropped with a Beam warning), typos are refused (item 9).
    (["-c", "flac", "--sample-format", "f32"], "--sample_format f32 cannot go with --codec flac"),
    (["--local-wave-tracks=0"], "--local_wave_tracks 0: give at least 1"),
    (["--forcee"], "run: unknown argument --forcee (see beamsplitter run --help"),
    (["--codecc", "flac"], "run: unknown argument --codecc (see"),
    (["--plan_output=p.jsonl"], "run: unknown argument --plan_output (see"),  # plan's, not run's
    (["stray"], "run: unknown argument stray (see"),
    (["--local_wave_tracks=many"], "run: argument --local_wave_tracks: invalid int value: 'many'"),
    (["--max-manifest-row-bytes=0"], "--max_manifest_row_bytes 0: give at least 1"),
    (["--max_manifest_columns=-1"], "--max_manifest_columns -1: give at least 0"),
])
def test_run_refuses_option_combinations_before_anything_runs(tmp_path, args, message):
    (tmp_path / "m.csv").write_text("track_id,uri\na,a.wav\n")
    result = run("run", "--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_job_arguments_beam_options_pass_both_spellings_typos_refused():
    from models.errors import InputError
    from pipeline.options import BeamsplitterOptions, job_args
    from pipeline.options import PlanOptions

    beam = ["--runner=DirectRunner", "--direct_num_workers", "2", "--direct_running_mode=multi_processing",
            "--flink_master=localhost:8081", "--s3_endpoint_url=http://localhost:9000", "--project", "p",
            "--environment_cache_millis=60000", "--save_main_session"]
    assert job_args(beam, "run") == beam
    assert job_args(["--sample-format", "f32", "--local-wave-tracks=3", "--stall-timeout=5", "-c", "flac",
                     "--force"], "run") == ["--sample_format", "f32", "--local_wave_tracks=3",
                                            "--stall_timeout=5", "-c", "flac", "--force"]
    assert job_args(["--plan-output", "p.jsonl"], "plan", (BeamsplitterOptions, PlanOptions)) == [
        "--plan_output", "p.jsonl"]
    for typo in (["--forcee"], ["--codecc", "flac"], ["--runnner=DirectRunner"], ["--sample_fmt=s24"],
                 ["--direct-num-workers=2"]):  # Beam's own options keep Beam's spelling
        with pytest.raises(InputError, match=re.escape(f"run: unknown argument {typo[0].split('=')[0]}")):
            job_args(typo, "run")
    with pytest.raises(InputError, match="train: unknown argument --epochz"):
        job_args(["--epochz=2"], "train")


@pytest.mark.slow  # plan and train, each in processes of their own
def test_plan_and_train_refuse_unknown_arguments_and_plan_takes_beam_options(tmp_path, checkpoint_2stems):
    (tmp_path / "m.csv").write_text("track_id,uri\na,a.wav\n")
    common = ["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
              "--checkpoint", str(checkpoint_2stems)]
    result = run("plan", *common, "--plan-outptu=x")
    assert (result.returncode, result.stderr) == (2, "error: plan: unknown argument --plan-outptu (see beamsplitter "
                                                     "plan --help; Apache Beam's options are accepted too)\n")
    result = run("plan", *common, "--runner=DirectRunner", "--direct_num_workers=1", "--plan-output",
                 str(tmp_path / "p.jsonl"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.jsonl").is_file() and "1 would fail (decode: 1)" in result.stdout
    result = run("train", "--config", "spleeter:2stems", "--dataset", str(tmp_path / "m.csv"), "-o",
                 str(tmp_path / "model"), "--local_wave_trakcs=2")
    assert (result.returncode, result.stderr.startswith("error: train: unknown argument --local_wave_trakcs")) \
        == (2, True), result.stderr
    assert not (tmp_path / "model").exists()


def test_plan_reports_an_unusable_manifest_on_one_line(tmp_path, checkpoint_2stems):
    (tmp_path / "m.csv").write_text('track_id,uri\n"a,a.wav\n')
    result = run("plan", "--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                 "--checkpoint", str(checkpoint_2stems))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "never closed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("args,message", [
    (["--tracks", "0"], "error: --tracks 0: give at least 1"),
    (["--seconds", "-1"], "error: --seconds -1: give the length of each track in seconds, above 0"),
    (["--seconds", "nan"], "error: --seconds nan: give the length of each track in seconds, above 0"),
])
def test_demo_catalogue_refuses_bad_sizes_on_one_line(tmp_path, args, message):
    result = run("demo-catalogue", str(tmp_path / "demo"), *args)
    assert (result.returncode, result.stderr) == (2, message + "\n")
    assert not (tmp_path / "demo").exists()


def test_the_summary_times_the_whole_command(tmp_path, checkpoint_2stems):
    """The wall time covered only the waves: `in 3.0 s` for a 7.1 s command (issue 11, item 15).

    Timed here up to the moment the summary line arrives (the interpreter's exit, after it, is not
    the summary's to count)."""
    import os
    import time

    (tmp_path / "m.csv").write_text("track_id,uri\ngone,gone.wav\n")
    started = time.monotonic()
    process = subprocess.Popen([BEAMSPLITTER, "run", "--manifest", str(tmp_path / "m.csv"), "--output",
                                str(tmp_path / "out"), "--checkpoint", str(checkpoint_2stems)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    with process:
        for line in process.stdout:
            summary = re.search(r"nothing to separate \((\d+\.\d) s\)", line)
            if summary:
                elapsed = time.monotonic() - started
                break
        process.stdout.read()
    assert process.returncode == 1
    assert elapsed - 0.7 <= float(summary[1]) <= elapsed + 0.1, (summary[1], elapsed)


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


@pytest.mark.parametrize("args,local,mode,copies", [
    ([], False, "tracks", None),
    ([], True, "none", None),
    # Issue 18, item 4: whole tracks on accelerator machines too, one model per machine.
    (["--inference_accelerator=type:nvidia-l4;count:1"], False, "tracks", 1),
    (["--inference_accelerator=type:nvidia-l4;count:1", "--fan_out=tracks"], False, "tracks", 1),
    (["--inference_accelerator=type:nvidia-l4;count:1", "--fan_out=none"], False, "none", 1),
    (["--inference_accelerator=type:nvidia-l4;count:1", "--fan_out=chunks"], False, "chunks", 1),
    (["--inference_accelerator=type:nvidia-l4;count:1", "--model_copies=2"], False, "tracks", 2),
])
def test_fan_out_and_model_copies_by_default(args, local, mode, copies):
    from pipeline.options import BeamsplitterOptions

    options = BeamsplitterOptions(["--input", "in/*.wav", "--output", "out", *args])
    options.check()  # accepted
    assert options.fan_out_mode(local).value == mode
    assert options.shared_model_copies() == copies


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


def test_encode_options_check_takes_what_ffmpeg_takes():
    from models.encoding import EncodeOptions
    from models.errors import InputError

    for bitrate in ("128k", "320000", "1.5M", "96K", None):
        EncodeOptions("mp3", bitrate).check()
    for codec, fmt in (("wav", "f32"), ("flac", "s24"), ("flac", "s16")):
        EncodeOptions(codec, sample_format=fmt).check()
    for bitrate in ("999x", "128 k", "-128k", "k", "0", "1e5", ""):
        with pytest.raises(InputError, match="^--bitrate "):
            EncodeOptions("mp3", bitrate).check()


def test_job_arguments_take_options_a_launcher_declares():
    """A PipelineOptions class of a launcher's (tests/services.py declares one for the Flink job server's
    jars) is parsed by Beam, so it is no unknown argument; another command's options are."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import job_args

    class LauncherOptions(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--launcher_only_option")

    assert job_args(["--launcher_only_option=x"], "run") == ["--launcher_only_option=x"]


def test_verbose_goes_before_or_after_the_command(tmp_path, checkpoint_2stems):
    manifest = tmp_path / "m.csv"
    manifest.write_text("track_id,uri\na,missing.wav\n")
    for args in (["--verbose", "plan"], ["plan", "--verbose"]):
        result = run(*args, "--manifest", str(manifest), "--output", str(tmp_path / "out"),
                     "--checkpoint", str(checkpoint_2stems))
        assert result.returncode == 0, result.stderr
        assert "0 tracks to separate" in result.stdout


def test_job_help_lists_the_options_that_matter_without_loading_tensorflow():
    """plan --help listed every option of run; both took seconds importing TensorFlow first."""
    planned = run("plan", "--help")
    assert planned.returncode == 0 and "--plan_output" in planned.stdout and "--codec" in planned.stdout
    assert not {"--fan_out", "--inference_batch_size", "--local_wave_tracks", "--stall_timeout"} & set(
        planned.stdout.split())
    ran = run("run", "--help")
    assert ran.returncode == 0 and "--fan_out" in ran.stdout and "--plan_output" not in ran.stdout
    probe = "import sys; from pipeline.cli import main; main(['run', '--help']); print('tensorflow' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert shown.stdout.strip().splitlines()[-1] == "False"


def test_fetch_finds_the_weights_without_loading_tensorflow(checkpoint_2stems):
    """`beamsplitter fetch` (scripts/run's first step) says where weights come from before TensorFlow's
    seconds-long import, which it never needs: it prints the folder, or one line for a bad model."""
    probe = ("import sys; from pipeline.cli import main; code = main(sys.argv[1:]); "
             "print('tensorflow' in sys.modules); sys.exit(code)")
    found = subprocess.run([sys.executable, "-c", probe, "fetch", "--checkpoint", str(checkpoint_2stems)],
                           capture_output=True, text=True, cwd=REPO)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(checkpoint_2stems), "False"]
    refused = subprocess.run([sys.executable, "-c", probe, "fetch", "-p", "spleeter:7stems"], capture_output=True,
                             text=True, cwd=REPO)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: unknown model configuration 'spleeter:7stems'")


def _options_by_dest(parser) -> dict[str, set[str]]:
    spellings: dict[str, set[str]] = {}
    for action in parser._actions:
        spellings.setdefault(action.dest, set()).update(action.option_strings)
    return spellings


def test_shared_options_are_spelled_alike_in_every_command_and_aliases_reach_the_same_value():
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    from pipeline.cli import build_parser
    from pipeline.options import BeamsplitterOptions

    commands = build_parser()._subparsers._group_actions[0].choices
    job = _BeamArgumentParser(allow_abbrev=False)
    BeamsplitterOptions._add_argparse_args(job)
    by_command = {"run": _options_by_dest(job), **{name: _options_by_dest(commands[name])
                                                   for name in ("separate", "evaluate", "fetch", "export-model")}}
    shared = {"output", "model", "checkpoint", "precision", "codec", "bitrate", "sample_format", "stall_timeout",
              "max_duration", "inference_batch_size", "stems", "two_stems"}
    for dest in shared:
        spellings = {name: frozenset(options[dest]) for name, options in by_command.items() if dest in options}
        assert len(set(spellings.values())) == 1, (dest, spellings)
    assert shared <= set(by_command["separate"]) and shared <= set(by_command["run"])

    aliases = ["--output_path", "out", "--params_filename", "spleeter:4stems", "--sample-format", "s24",
               "--batch-size", "2", "--stall-timeout", "7", "--max-duration", "9"]
    separate = build_parser().parse_args(["separate", "a.wav", *aliases])
    ran = BeamsplitterOptions(["--manifest", "m.csv", *aliases]).view_as(BeamsplitterOptions)
    for values in (separate, ran):
        assert (values.output, values.model, values.sample_format, values.inference_batch_size, values.stall_timeout,
                values.max_duration) == ("out", "spleeter:4stems", "s24", 2, 7.0, 9.0)
    defaults = build_parser().parse_args(["separate", "a.wav"])
    assert (defaults.model, defaults.inference_batch_size, defaults.sample_format) == ("spleeter:2stems", 4, "s16")


def test_abbreviated_options_are_refused_as_run_refuses_them(tmp_path, music_track):
    """``--two-stem`` is no spelling of ``--two_stems`` (argparse would take it as an abbreviation)."""
    result = run("separate", str(music_track), "-o", str(tmp_path / "out"), "--two-stem", "vocals")
    assert result.returncode == 2 and "unrecognized arguments: --two-stem vocals" in result.stderr
    assert not (tmp_path / "out").exists()
