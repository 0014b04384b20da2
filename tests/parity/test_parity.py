"""Parity with the reference implementation, spleeter==2.4.2, on the same inputs and checkpoints.

Every stem must match Spleeter's at >= 60 dB SNR (float stems from the Python
APIs at >= 85 dB, see MIN_SNR_FLOAT_DB), where
``SNR = 10 log10(sum ref^2 / sum (ours - ref)^2)`` over both channels, and the
stems must differ from each other (a saturated model, every mask 1/n, would
otherwise match trivially).

Cases:

* command line, official 2stems checkpoint: ``spleeter separate`` against
  ``beamsplitter separate`` (16-bit WAV stems compared after decoding) on a
  30 s stereo 44.1 kHz track, a 30.3 s one (longer than a chunk, a length that
  is a multiple of nothing), a mono 22.05 kHz one (both resample with ffmpeg),
  with ``-s 3 -d 14``, and with ``--mwf``;
* Python API (float stems, no quantization) on the 30 s track: the official
  2stems and 2stems-16kHz, random-weight 4stems, 5stems and 4stems-16kHz
  (sharing the 4stems weights); the decoded input is checked to be identical
  too.

Spleeter is launched four times in all (three CLI runs, one API driver) since
each launch costs seconds of TensorFlow start-up. Run with ``-s`` to see the
SNR table.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests import music

pytestmark = [pytest.mark.parity, pytest.mark.slow]  # Spleeter itself, in its own venv

MIN_SNR_DB = 60.0
# Float stems (Python API, no 16-bit quantization) measure about 100 dB. The
# 60 dB bar alone lets through real bugs: batch-norm epsilon 1e-5 instead of
# 1e-3 measures 61-80 dB, ELU outputs 0.1 % off 64-77 dB. So float comparisons
# must also clear this bar, which leaves some 15 dB for float32 round-off
# differences across CPUs and TensorFlow builds (CPU inference only: TF32 on a
# GPU would cost far more).
MIN_SNR_FLOAT_DB = 85.0
# Two stems count as distinct when their difference holds at least 1 % of the
# smaller one's energy (similarity below 20 dB).
MAX_SIMILARITY_DB = 20.0
DRIVER = Path(__file__).with_name("spleeter_driver.py")
OFFSET, DURATION = 3.0, 14.0

RESULTS: list[tuple[str, str, float]] = []  # (case, stem, SNR dB), for the summary table


# --- measures ---------------------------------------------------------------------------------------------------

def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = np.asarray(reference, np.float64)
    error = np.sum((np.asarray(estimate, np.float64) - reference) ** 2)
    signal = np.sum(reference ** 2)
    return math.inf if error == 0 else 10 * math.log10(signal / error)


def similarity_db(a: np.ndarray, b: np.ndarray) -> float:
    """How close two stems are: the smaller one's energy over their difference's, in dB."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    difference = np.sum((a - b) ** 2)
    smaller = min(np.sum(a ** 2), np.sum(b ** 2))
    return math.inf if difference == 0 else 10 * math.log10(smaller / difference)


def check_parity(case: str, reference: dict[str, np.ndarray], ours: dict[str, np.ndarray],
                 min_snr: float = MIN_SNR_DB) -> None:
    """Assert every stem of ``ours`` matches ``reference`` at ``min_snr`` dB, and the stems are distinct."""
    assert sorted(ours) == sorted(reference), f"{case}: instruments {sorted(ours)}, Spleeter has {sorted(reference)}"
    for name in reference:
        assert ours[name].shape == reference[name].shape, (
            f"{case}/{name}: shape {ours[name].shape}, Spleeter's is {reference[name].shape}")
        assert np.any(reference[name]), f"{case}/{name}: Spleeter's stem is silent"
    snrs = {name: snr_db(reference[name], ours[name]) for name in reference}
    for name, value in snrs.items():
        RESULTS.append((case, name, value))
    summary = ", ".join(f"{name} {value:.1f} dB" for name, value in snrs.items())
    names = list(reference)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    closest = max(similarity_db(reference[a], reference[b]) for a, b in pairs)
    print(f"\n[parity] {case}: {summary} (closest two stems: {closest:.1f} dB similar)")
    bad = {name: value for name, value in snrs.items() if not value >= min_snr}
    assert not bad, f"{case}: SNR against Spleeter below {min_snr} dB for {sorted(bad)} ({summary})"
    for stems, whose in ((reference, "Spleeter's"), (ours, "our")):
        similar = {(a, b): similarity_db(stems[a], stems[b]) for a, b in pairs}
        close = {pair: value for pair, value in similar.items() if not value < MAX_SIMILARITY_DB}
        assert not close, (
            f"{case}: {whose} stems are (nearly) identical, the model is degenerate: "
            + ", ".join(f"{a}~{b} {value:.1f} dB" for (a, b), value in close.items()))


def read_wav16(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as float64 ``[n, channels]`` in LSB units."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2, f"{path}: {8 * w.getsampwidth()}-bit, expected 16-bit"
        assert w.getframerate() == 44100, f"{path}: {w.getframerate()} Hz"
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return data.astype(np.float64)


def run(command: list[str], env: dict[str, str], what: str) -> float:
    """Run ``command``, fail with its output on a non-zero exit; returns the seconds it took."""
    begin = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                            capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    print(f"\n[parity] {what}: {seconds:.1f} s")
    return seconds


def beamsplitter_command() -> list[str]:
    script = Path(sys.executable).with_name("beamsplitter")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline.cli"]


# --- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def summary_table():
    begin = time.perf_counter()
    yield
    if RESULTS:
        lines = [f"{case:<36} {stem:<14} {value:7.1f} dB" for case, stem, value in RESULTS]
        print("\n[parity] SNR against spleeter 2.4.2 (module took %.0f s)\n" % (time.perf_counter() - begin)
              + "\n".join(lines))


@pytest.fixture(scope="module")
def inputs(music_track, tmp_path_factory) -> dict[str, Path]:
    """The test inputs, by case name; file stems are distinct, so are the output folders."""
    folder = tmp_path_factory.mktemp("parity-inputs")
    return {
        "music": music_track,
        # Longer than two chunks, and 1 336 230 samples: not a multiple of the hop or the chunk.
        "odd": music.make_track(folder / "odd.wav", seconds=30.3, seed=2),
        # Mono at 22.05 kHz: both implementations resample with ffmpeg and duplicate the channel.
        "mono22k": music.make_mono_22k(folder / "mono22k.wav", seconds=20.0, seed=1),
    }


@pytest.fixture(scope="module")
def cli_outputs(inputs, checkpoint_2stems, reference_venv, tmp_path_factory) -> dict[str, Path]:
    """Both command lines, on every input in one launch, then with an offset and a duration."""
    out = tmp_path_factory.mktemp("parity-cli")
    env = {"MODEL_PATH": str(checkpoint_2stems.parent)}  # Spleeter's convention, which beamsplitter honours too
    files = [str(inputs[name]) for name in ("music", "odd", "mono22k")]
    spleeter = [str(reference_venv / "bin" / "spleeter"), "separate", "-p", "spleeter:2stems", "-c", "wav"]
    ours = beamsplitter_command() + ["separate", "-p", "spleeter:2stems", "-c", "wav"]
    window = ["-s", f"{OFFSET:g}", "-d", f"{DURATION:g}"]
    run(spleeter + ["-o", str(out / "spleeter")] + files, env, "spleeter separate (3 files)")
    run(ours + ["-o", str(out / "beamsplitter")] + files, env, "beamsplitter separate (3 files)")
    run(spleeter + window + ["-o", str(out / "spleeter-window"), files[0]], env, "spleeter separate -s -d")
    run(ours + window + ["-o", str(out / "beamsplitter-window"), files[0]], env, "beamsplitter separate -s -d")
    run(spleeter + ["--mwf", "-o", str(out / "spleeter-mwf"), files[0]], env, "spleeter separate --mwf")
    run(ours + ["--mwf", "-o", str(out / "beamsplitter-mwf"), files[0]], env, "beamsplitter separate --mwf")
    return {
        "spleeter": out / "spleeter",
        "beamsplitter": out / "beamsplitter",
        "spleeter-window": out / "spleeter-window",
        "beamsplitter-window": out / "beamsplitter-window",
        "spleeter-mwf": out / "spleeter-mwf",
        "beamsplitter-mwf": out / "beamsplitter-mwf",
    }


# (case, configuration, checkpoint source: "official" or "random")
API_CASES = [
    ("2stems", "spleeter:2stems", "official"),
    ("2stems-16kHz", "spleeter:2stems-16kHz", "official"),
    ("4stems", "spleeter:4stems", "random"),
    ("4stems-16kHz", "spleeter:4stems-16kHz", "random"),
    ("5stems", "spleeter:5stems", "random"),
]


@pytest.fixture(scope="module")
def api_checkpoints(checkpoint_2stems, random_checkpoint) -> dict[str, Path]:
    """Checkpoint folder per API case."""
    return {case: checkpoint_2stems if source == "official" else random_checkpoint(model)
            for case, model, source in API_CASES}


@pytest.fixture(scope="module")
def api_reference(inputs, api_checkpoints, reference_venv, tmp_path_factory) -> dict[str, Path]:
    """Spleeter's Python API on the 30 s track for every API case, in one launch: case -> .npz."""
    out = tmp_path_factory.mktemp("parity-api")
    # One MODEL_PATH for every model directory: link each checkpoint in under its model_dir.
    model_path = out / "models"
    model_path.mkdir()
    from models.config import load_config

    for case, model, _ in API_CASES:
        link = model_path / load_config(model).model_dir
        if not link.exists():
            link.symlink_to(api_checkpoints[case], target_is_directory=True)
        assert link.resolve() == api_checkpoints[case].resolve(), f"{case}: two checkpoints for {link.name}"
    jobs = [{"params": model, "input": str(inputs["music"]), "output": str(out / f"{case}.npz")}
            for case, model, _ in API_CASES]
    spec = out / "jobs.json"
    spec.write_text(json.dumps(jobs))
    run([str(reference_venv / "bin" / "python"), str(DRIVER), str(spec)], {"MODEL_PATH": str(model_path)},
        f"spleeter API driver ({len(jobs)} models)")
    return {case: out / f"{case}.npz" for case, _, _ in API_CASES}


# --- tests ------------------------------------------------------------------------------------------------------

def cli_stems(cli_outputs, variant: str, name: str = "music") -> tuple[dict, dict]:
    """Spleeter's and our 2stems WAV stems of input ``name`` from the CLI run ``variant``."""
    reference_dir = cli_outputs[f"spleeter{variant}"] / name
    ours_dir = cli_outputs[f"beamsplitter{variant}"] / name
    assert sorted(p.name for p in ours_dir.iterdir()) == sorted(p.name for p in reference_dir.iterdir())
    reference = {p.stem: read_wav16(p) for p in sorted(reference_dir.glob("*.wav"))}
    ours = {p.stem: read_wav16(ours_dir / p.name) for p in sorted(reference_dir.glob("*.wav"))}
    assert sorted(reference) == ["accompaniment", "vocals"]
    return reference, ours


@pytest.mark.parametrize("name", ["music", "odd", "mono22k"])
def test_cli_2stems(name, cli_outputs):
    reference, ours = cli_stems(cli_outputs, "", name)
    check_parity(f"cli 2stems {name}", reference, ours)


def test_cli_2stems_offset_duration(cli_outputs):
    reference, ours = cli_stems(cli_outputs, "-window")
    assert len(reference["vocals"]) == round(DURATION * 44100), "Spleeter's -d did not give the expected length"
    check_parity(f"cli 2stems music -s {OFFSET:g} -d {DURATION:g}", reference, ours)


def test_cli_2stems_wiener_filter(cli_outputs):
    """--mwf: norbert's whole-track Wiener filter, which beamsplitter computes in two streaming passes."""
    reference, ours = cli_stems(cli_outputs, "-mwf")
    plain = read_wav16(cli_outputs["spleeter"] / "music" / "vocals.wav")
    assert snr_db(plain, reference["vocals"]) < 40, "Spleeter's --mwf output is the plain mask output"
    check_parity("cli 2stems music --mwf", reference, ours)


@pytest.fixture(scope="module")
def decoded_music(inputs) -> np.ndarray:
    from models import decoding

    return decoding.load(str(inputs["music"]), 44100)


@pytest.mark.parametrize("case,model,source", API_CASES, ids=[c[0] for c in API_CASES])
def test_api(case, model, source, api_reference, api_checkpoints, decoded_music):
    from models.decoding import to_stereo
    from models.provider import load_separator

    with np.load(api_reference[case]) as data:
        spleeter_input = data["waveform"]
        reference = {k: data[k] for k in data.files if k != "waveform"}
    # Decoding: both call ffmpeg for float32 samples; they must be the very same samples.
    assert decoded_music.shape == to_stereo(spleeter_input).shape
    assert np.array_equal(decoded_music, to_stereo(spleeter_input)), "decoded input differs from Spleeter's"
    separator = load_separator(model, str(api_checkpoints[case]))
    ours = separator.separate(to_stereo(spleeter_input))
    check_parity(f"api {case} ({source} weights)", reference, ours, min_snr=max(MIN_SNR_DB, MIN_SNR_FLOAT_DB))
