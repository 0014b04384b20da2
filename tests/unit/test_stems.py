"""--stems and --two-stems: which stems a run synthesizes, and how they relate to a run of every stem."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import decoding, spectral
from models.chunking import segments
from models.errors import InputError
from models.provider import load_separator
from models.stems import StemSelection, stem_names
from tests.music import synthesize_stems

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")
INSTRUMENTS_4 = ("vocals", "drums", "bass", "other")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return np.inf if noise == 0 else 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise)


def test_stems_are_taken_in_the_models_order_and_two_stems_masks_the_rest():
    chosen = StemSelection.of(INSTRUMENTS_4, stems="other, vocals")
    assert chosen.names == ("vocals", "other") and chosen.groups == ((0,), (3,))
    assert not chosen.covers_mix(4) and not chosen.measures_vocals(4)
    two = StemSelection.of(INSTRUMENTS_4, two_stems="drums")
    assert two.names == ("drums", "no_drums") and two.groups == ((1,), (0, 2, 3))
    assert two.covers_mix(4) and not two.measures_vocals(4)
    assert StemSelection.of(INSTRUMENTS_4) == StemSelection.all_of(INSTRUMENTS_4)
    assert StemSelection.of(INSTRUMENTS_4, two_stems="vocals").measures_vocals(4)
    assert "no_vocals" in stem_names(INSTRUMENTS_4) and "no_no_vocals" not in stem_names(INSTRUMENTS_4)


@pytest.mark.parametrize("stems, two_stems, message", [
    ("vocal", None, "--stems vocal: 'vocal' is not an instrument of the model "
                    "(its instruments: vocals, drums, bass, other)"),
    ("vocals,piano,guitar", None, "--stems vocals,piano,guitar: 'piano', 'guitar' are not an instrument of the "
                                  "model (its instruments: vocals, drums, bass, other)"),
    ("", None, "--stems : '' is not an instrument of the model (its instruments: vocals, drums, bass, other)"),
    (None, "voice", "--two_stems voice: not an instrument of the model (its instruments: vocals, drums, bass, other)"),
    ("vocals", "vocals", "--stems and --two_stems exclude each other: give one"),
])
def test_a_bad_choice_names_the_bad_name_and_the_models_instruments(stems, two_stems, message):
    with pytest.raises(InputError) as caught:
        StemSelection.of(INSTRUMENTS_4, stems, two_stems)
    assert str(caught.value) == message


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    """14 s of music: two model chunks."""
    return sum(stem for name, stem in synthesize_stems(14.0, seed=4).items() if name != "accompaniment")


def test_no_instrument_is_the_mix_masked_by_the_sum_of_the_other_masks(random_checkpoint, mix):
    separator = load_separator("spleeter:4stems", str(random_checkpoint("spleeter:4stems")))
    config = separator.config
    samples = np.stack([s.samples for s in segments([mix], separator.geometry)])
    two = StemSelection.of(separator.instruments, two_stems="vocals")
    vocals, no_vocals = separator.separate_chunks(samples, groups=two.groups)
    # The same stages by hand: every mask, the others' summed, applied to the mix, one inverse STFT.
    spectrum, magnitude = spectral.analyze(samples, config)
    masks = spectral.ratio_masks(separator.network(magnitude), config).numpy()
    others = masks[1] + masks[2] + masks[3]
    expected = spectral.istft(spectral.apply_masks(spectrum, others[None], config.mask_extension)[0],
                              config.frame_length, config.frame_step).numpy()
    assert snr_db(expected, no_vocals) > 100
    full = separator.separate_chunks(samples)
    assert snr_db(full[0], vocals) > 100


def test_chosen_stems_equal_the_same_stems_of_a_run_of_every_stem(checkpoint_2stems, mix):
    separator = load_separator("spleeter:2stems", str(checkpoint_2stems))
    full = separator.separate(mix)
    chosen = separator.separate(mix, selection=StemSelection.of(separator.instruments, stems="accompaniment"))
    assert list(chosen) == ["accompaniment"]
    assert np.array_equal(chosen["accompaniment"], full["accompaniment"]) or \
        snr_db(full["accompaniment"], chosen["accompaniment"]) >= 100


def beamsplitter(*args):
    return subprocess.run([BEAMSPLITTER, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # separations in processes of their own
def test_separate_writes_only_the_chosen_stems(tmp_path, checkpoint_2stems, music_track):
    result = beamsplitter("separate", str(music_track), "-o", str(tmp_path / "out"), "--checkpoint",
                          str(checkpoint_2stems), "-d", "5", "--stems", "accompaniment")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "out" / music_track.stem) == ["accompaniment.wav"]
    assert len(decoding.load(str(tmp_path / "out" / music_track.stem / "accompaniment.wav"), 44100)) == 5 * 44100


@pytest.mark.slow  # separations in processes of their own
def test_separate_two_stems_of_a_4stems_model(tmp_path, random_checkpoint, music_track):
    result = beamsplitter("separate", str(music_track), "-o", str(tmp_path / "out"), "-p", "spleeter:4stems",
                          "--checkpoint", str(random_checkpoint("spleeter:4stems")), "-d", "5",
                          "--two-stems", "vocals")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / music_track.stem
    assert sorted(os.listdir(folder)) == ["no_vocals.wav", "vocals.wav"]
    assert "2 stems in" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--stems", "vocal"], "error: --stems vocal: 'vocal' is not an instrument of the model "
                           "(its instruments: vocals, accompaniment)"),
    (["--two-stems", "drums"], "error: --two_stems drums: not an instrument of the model "
                               "(its instruments: vocals, accompaniment)"),
    (["--stems", "vocals", "--two-stems", "vocals"], "error: --stems and --two_stems exclude each other: give one"),
])
def test_a_bad_choice_of_stems_stops_separate_before_any_work(tmp_path, music_track, args, message):
    # A checkpoint that does not exist: the choice is refused before the model is looked for.
    result = beamsplitter("separate", str(music_track), "-o", str(tmp_path / "out"), "--checkpoint",
                          str(tmp_path / "no-weights"), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("args, message", [
    (["--stems", "vocal"], "error: --stems vocal: 'vocal' is not an instrument of the model "
                           "(its instruments: vocals, drums, bass, other)"),
    (["--two-stems=piano"], "error: --two_stems piano: not an instrument of the model "
                            "(its instruments: vocals, drums, bass, other)"),
    (["--stems=vocals", "--two_stems=vocals"], "error: --stems and --two_stems exclude each other: give one"),
])
def test_a_bad_choice_of_stems_stops_run_and_plan_before_any_work(tmp_path, command, args, message):
    (tmp_path / "m.csv").write_text("track_id,uri\na,a.wav\n")
    result = beamsplitter(command, "--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                          "-p", "spleeter:4stems", "--checkpoint", str(tmp_path / "no-weights"), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()
