"""--stems and --two-stems: which stems a run synthesizes, and how they relate to a run of every stem."""

import numpy as np
import pytest

from models import spectral
from models.chunking import segments
from models.errors import InputError
from models.provider import load_separator
from models.stems import StemSelection, stem_names
from tests.music import synthesize_stems

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
    (None, "voice", "--two-stems voice: not an instrument of the model (its instruments: vocals, drums, bass, other)"),
    ("vocals", "vocals", "--stems and --two-stems exclude each other: give one"),
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
