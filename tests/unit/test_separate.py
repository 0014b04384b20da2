"""Many tracks on one machine (pipeline/separate.py): batching across tracks changes nothing; one bad track spoils nothing."""

import os

import numpy as np
import pytest

from models import decoding, encoding
from models.encoding import EncodeOptions
from pipeline.separate import TrackJob, track_jobs, separate_files, stem_path
from models.errors import InputError
from models.ffmpeg_process import IOLimits
from models.provider import load_separator


@pytest.fixture(scope="module")
def separator(checkpoint_2stems):
    return load_separator("spleeter:2stems", str(checkpoint_2stems))


def test_batched_tracks_equal_separate_runs(tmp_path, separator, music_track):
    short = str(tmp_path / "short.wav")
    encoding.save(short, decoding.load(str(music_track), 44100, offset=2.0, duration=5.0), 44100, sample_format="f32")
    sources = [str(music_track), short, str(music_track)]
    jobs = [TrackJob(src, {name: str(tmp_path / f"{i}-{name}.wav") for name in separator.instruments})
            for i, src in enumerate(sources)]
    progress = []
    results = separate_files(separator, jobs, EncodeOptions(sample_format="f32"), batch_size=3,
                             on_progress=progress.append)
    assert [r.ok for r in results] == [True, True, True]
    for job, result in zip(jobs, results):
        expected = separator.separate(decoding.load(job.source, 44100))
        for name in separator.instruments:
            ours = decoding.load(job.outputs[name], 44100)
            assert ours.shape == expected[name].shape
            error = np.sum((ours - expected[name]) ** 2)
            assert error == 0 or 10 * np.log10(np.sum(expected[name] ** 2) / error) > 90
        assert result.seconds == pytest.approx(len(expected["vocals"]) / 44100)
    assert sum(progress) == pytest.approx(sum(r.seconds for r in results))


def test_a_bad_track_fails_alone(tmp_path, separator, music_track):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\0" * 100)
    sources = [str(music_track), str(bad), str(tmp_path / "missing.flac"), str(music_track)]
    jobs = track_jobs(sources[:1], str(tmp_path / "a"), "{filename}/{instrument}.{codec}", separator.instruments, "wav")
    jobs += track_jobs(sources[1:3], str(tmp_path / "b"), "{filename}/{instrument}.{codec}", separator.instruments, "wav")
    jobs += track_jobs(sources[3:], str(tmp_path / "c"), "{filename}/{instrument}.{codec}", separator.instruments, "wav")
    seen = []
    results = separate_files(separator, jobs, on_result=seen.append)
    assert [r.ok for r in results] == [True, False, False, True]
    assert str(results[1].error).startswith(f"{bad}: ")
    assert str(results[2].error) == f"{tmp_path / 'missing.flac'}: no such file"
    assert sorted(r.job.source for r in seen) == sorted(sources)
    assert not (tmp_path / "b").exists() or not any(p.is_file() for p in (tmp_path / "b").rglob("*"))
    for folder in ("a", "c"):
        names = sorted(os.listdir(tmp_path / folder / music_track.stem))
        assert names == ["accompaniment.wav", "vocals.wav"]


def test_stem_paths_follow_spleeter_placeholders():
    assert stem_path("/music/album/01 song.mp3", "/out/", "{foldername}/{filename}-{instrument}.{codec}",
                     "vocals", "flac") == "/out/album/01 song-vocals.flac"
    with pytest.raises(InputError, match="filename format '{name}/{instrument}': 'name'"):
        stem_path("a.wav", "out", "{name}/{instrument}", "vocals", "wav")


def test_colliding_stem_paths_are_refused():
    with pytest.raises(InputError, match="/b/x.wav: its stem /.*/out/x/vocals.wav would overwrite one of /.*/a/x.wav"):
        track_jobs(["a/x.wav", "b/x.wav"], "out", "{filename}/{instrument}.{codec}", ("vocals",), "wav")


def test_a_stem_that_would_land_on_an_input_is_refused(tmp_path, monkeypatch):
    # -f '{foldername}/{instrument}.{codec}' -o <the input's parent>: album/vocals.wav is its own vocals stem.
    album = tmp_path / "album"
    album.mkdir()
    (album / "vocals.wav").write_bytes(b"RIFF")
    (tmp_path / "link").symlink_to(album)
    monkeypatch.chdir(tmp_path)
    for source in ("album/vocals.wav", f"file://{album}/vocals.wav", "./album/../album/vocals.wav"):
        with pytest.raises(InputError, match="its stem .*/album/vocals.wav would overwrite the input"):
            track_jobs([source], ".", "{foldername}/{instrument}.{codec}", ("vocals", "accompaniment"), "wav")
    with pytest.raises(InputError, match="its stem .*/album/vocals.wav would overwrite the input .*/link/vocals"):
        track_jobs(["link/vocals.wav"], str(tmp_path), "album/{instrument}.{codec}", ("vocals",), "wav")
    # Another input, not the file itself, is just as much a loss.
    (album / "other.wav").write_bytes(b"RIFF")
    with pytest.raises(InputError, match="would overwrite the input .*/album/vocals.wav"):
        track_jobs(["album/other.wav", "album/vocals.wav"], "album/..", "album/{instrument}.{codec}",
                  ("vocals",), "wav")
    (jobs,) = track_jobs(["album/vocals.wav"], "./out/", "{foldername}/{instrument}.{codec}", ("vocals",), "wav")
    assert jobs.source == str(album / "vocals.wav") and jobs.outputs == {"vocals": str(tmp_path / "out/album/vocals.wav")}


def test_a_format_that_leaves_a_missing_output_folder_writes_its_stems(tmp_path, separator, monkeypatch):
    # separate -f '../escape/{instrument}.{codec}' -o fmt5, fmt5 not there: the stems go to ./escape/.
    monkeypatch.chdir(tmp_path)
    encoding.save("short.wav", demo_samples(2.0), 44100)
    jobs = track_jobs(["file://" + str(tmp_path / "short.wav")], "fmt5", "../escape/{instrument}.{codec}",
                     separator.instruments, "wav")
    assert jobs[0].outputs == {name: str(tmp_path / "escape" / f"{name}.wav") for name in separator.instruments}
    (result,) = separate_files(separator, jobs)
    assert result.ok, result.error
    assert sorted(os.listdir(tmp_path / "escape")) == ["accompaniment.wav", "vocals.wav"]


def demo_samples(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((int(seconds * 44100), 2))).astype(np.float32)


def test_a_bug_stops_the_run_with_its_traceback_and_leaves_nothing(tmp_path, separator, music_track, monkeypatch):
    calls = []

    def broken(samples, batch_size=None, groups=None):
        calls.append(len(samples))
        if len(calls) == 2:
            raise RuntimeError("bug in the model")
        return original(samples, batch_size, groups)

    original = separator.separate_chunks
    monkeypatch.setattr(separator, "separate_chunks", broken)
    jobs = track_jobs([str(music_track)] * 1, str(tmp_path), "{filename}/{instrument}.{codec}",
                     separator.instruments, "wav")
    jobs += track_jobs([str(music_track)], str(tmp_path / "b"), "{filename}/{instrument}.{codec}",
                      separator.instruments, "wav")
    with pytest.raises(RuntimeError, match="bug in the model"):
        separate_files(separator, jobs, batch_size=1)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("stage", ["segments", "add"])  # the reader's thread, the writer's
def test_a_bug_on_another_thread_stops_the_run_with_its_traceback_and_leaves_nothing(stage, tmp_path, separator,
                                                                                     music_track, monkeypatch):
    import pipeline.separate
    from models.stems import StemWriter

    calls = []

    def fail_the_second_time():  # the first track's second chunk: no track is complete
        calls.append(stage)
        if len(calls) == 2:
            raise RuntimeError(f"bug in {stage}")

    if stage == "segments":
        original_segments = pipeline.separate.segments

        def broken_segments(*args):
            for segment in original_segments(*args):
                fail_the_second_time()
                yield segment

        monkeypatch.setattr(pipeline.separate, "segments", broken_segments)
    else:
        original_add = StemWriter.add

        def broken_add(self, *args):
            fail_the_second_time()
            return original_add(self, *args)

        monkeypatch.setattr(StemWriter, "add", broken_add)
    jobs = track_jobs([str(music_track)], str(tmp_path / "a"), "{filename}/{instrument}.{codec}",
                      separator.instruments, "wav")
    jobs += track_jobs([str(music_track)], str(tmp_path / "b"), "{filename}/{instrument}.{codec}",
                       separator.instruments, "wav")
    with pytest.raises(RuntimeError, match=f"bug in {stage}"):
        separate_files(separator, jobs, batch_size=1)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_max_duration_is_the_longest_track_that_passes(tmp_path, separator, music_track):
    """A 5 s track passes a 5 s limit and no limit (0); a 4.5 s limit fails it before decoding, and a
    file that hides its length (a WAV streamed with no length) at the limit."""
    short = str(tmp_path / "short.wav")
    encoding.save(short, decoding.load(str(music_track), 44100, duration=5.0), 44100)
    hidden = tmp_path / "hidden.wav"  # a streamed WAV: its header gives no length, so only decoding tells
    data = bytearray(open(short, "rb").read())
    at = data.index(b"data") + 4
    data[4:8] = data[at:at + 4] = b"\xff\xff\xff\xff"
    hidden.write_bytes(bytes(data))
    assert decoding.probe_duration(str(hidden)) is None
    for limit, ok in ((5.0, True), (0.0, True), (4.5, False)):
        jobs = [TrackJob(source, {name: str(tmp_path / f"{limit}" / f"{i}-{name}.wav")
                                  for name in separator.instruments}) for i, source in enumerate((short, str(hidden)))]
        results = separate_files(separator, jobs, io=IOLimits(max_duration=limit))
        assert [r.ok for r in results] == [ok, ok], [str(r.error) for r in results]
        if not ok:
            assert str(results[0].error) == f"{short}: lasts 5.0 s, longer than --max_duration 4.5 s; not decoded"
            assert str(results[1].error) == f"{hidden}: decodes to more than --max_duration 4.5 s; decoding stopped"
            assert not (tmp_path / f"{limit}").exists() or not os.listdir(tmp_path / f"{limit}")
