"""Chunked streaming gives the whole-track result: segmentation, batching and overlap-add."""


import numpy as np
import pytest

from models import spectral
from models.chunking import ChunkGeometry, OverlapAdd, overlap_add, segments, separate_chunks, separate_stream
from models.config import load_config

CONFIG = load_config("spleeter:2stems")
GEOMETRY = ChunkGeometry.of(CONFIG)
L, H, T = CONFIG.frame_length, CONFIG.frame_step, CONFIG.T


def fake_estimates(magnitude):
    """A stand-in network whose output depends on the whole chunk, like a U-Net's does."""
    level = magnitude.mean()
    return np.stack([magnitude * (0.3 + level), magnitude * (1.0 - 0.5 * np.tanh(magnitude))])


def whole_track(waveform):
    """Spleeter's route: pad, one STFT of everything, split frames into chunks, one inverse STFT."""
    n = len(waveform)
    padded = np.concatenate([np.zeros((L, 2), np.float32), waveform])
    n_frames = -(-len(padded) // H)  # tf.signal.stft(pad_end=True)
    padded = np.concatenate([padded, np.zeros(((n_frames - 1) * H + L - len(padded), 2), np.float32)])
    spectrum = spectral.stft(padded, L, H)
    n_chunks = -(-n_frames // T)
    magnitude = spectral.magnitude(spectrum, CONFIG.F).numpy()
    magnitude = np.concatenate([magnitude, np.zeros((n_chunks * T - n_frames,) + magnitude.shape[1:], np.float32)])
    estimates = np.concatenate([fake_estimates(chunk) for chunk in np.split(magnitude, n_chunks)], axis=1)
    masks = spectral.ratio_masks(estimates, CONFIG)[:, :n_frames]
    return [stem[L:L + n] for stem in spectral.istft(spectral.apply_masks(spectrum, masks), L, H).numpy()]


def chunked(waveform, block, batch_size=3):
    """Our route: the streaming routine, the network's batches never reaching past the last chunk."""
    blocks = (waveform[i:i + block] for i in range(0, len(waveform), block))
    batches = []

    def separate(batch):
        batches.append([segment.index for segment in batch])
        return separate_chunks(np.stack([s.samples for s in batch]), estimate, CONFIG)

    def estimate(magnitudes):
        return np.stack([fake_estimates(m) for m in np.asarray(magnitudes)], axis=1)

    chunks = list(separate_stream(segments(blocks, GEOMETRY), separate, batch_size))
    indices = [i for batch in batches for i in batch]
    assert indices == list(range(len(chunks))) and all(len(b) <= batch_size for b in batches)
    return overlap_add(chunks, GEOMETRY), len(chunks)


def snr(reference, estimate):
    """dB; infinite when the two are identical."""
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((estimate - reference).astype(np.float64) ** 2))


@pytest.mark.parametrize("n_samples,block", [
    (GEOMETRY.step * 2 + 12345, 65536),  # three chunks, ragged end
    (GEOMETRY.step - L, 1000),           # exactly one chunk of padded frames
    (GEOMETRY.step - L + 1, 4097),       # one sample more: a second chunk
    (3 * GEOMETRY.step, 300000),         # whole chunks, blocks straddling chunk borders
])
def test_chunked_stream_equals_whole_track(n_samples, block):
    rng = np.random.default_rng(n_samples)
    waveform = (rng.standard_normal((n_samples, 2)) * 0.1).astype(np.float32)
    expected = whole_track(waveform)
    stems, count = chunked(waveform, block)
    assert count == GEOMETRY.n_chunks(n_samples)
    assert stems.shape == (2, n_samples, 2)
    for reference, ours in zip(expected, stems):
        assert snr(reference, ours) > 120


@pytest.mark.parametrize("n_samples", [1, 1023, 4096, 100000])
def test_short_tracks_keep_their_length(n_samples):
    waveform = np.full((n_samples, 2), 0.25, np.float32)
    stems, count = chunked(waveform, 512)
    assert count == 1
    assert stems.shape == (2, n_samples, 2)


def test_one_instrument_gives_back_the_input():
    """Analysis and synthesis are the identity when the mask is one."""
    rng = np.random.default_rng(1)
    waveform = (rng.standard_normal((GEOMETRY.step + 5000, 2)) * 0.2).astype(np.float32)
    joiner = OverlapAdd(GEOMETRY)
    out = []
    for segment in segments([waveform], GEOMETRY):
        spectrum = spectral.stft(segment.samples, L, H)
        out.append(joiner.add(segment.index, spectral.istft(spectrum, L, H).numpy()[None], segment.n_samples)[0])
    assert snr(waveform, np.concatenate(out)) > 100


def test_overlap_add_refuses_chunks_out_of_order():
    joiner = OverlapAdd(GEOMETRY)
    with pytest.raises(ValueError, match="chunk 1 arrived, chunk 0 expected"):
        joiner.add(1, np.zeros((2, GEOMETRY.span, 2), np.float32))


def test_masks_share_the_mix_and_extend_above_F():
    rng = np.random.default_rng(2)
    estimates = rng.random((3, 4, CONFIG.F, 2)).astype(np.float32)
    masks = spectral.ratio_masks(estimates, CONFIG).numpy()
    np.testing.assert_allclose(masks.sum(axis=0), 1.0, rtol=1e-5)
    spectrum = (rng.standard_normal((2, 4, CONFIG.n_bins)) + 1j).astype(np.complex64)
    zeros = spectral.apply_masks(spectrum, masks, "zeros").numpy()
    assert zeros.shape == (3, 2, 4, CONFIG.n_bins)
    by_channel = masks.transpose(0, 3, 1, 2)  # [n, 2, frames, F], the spectrum's layout
    np.testing.assert_allclose(zeros[..., :CONFIG.F], spectrum[None, ..., :CONFIG.F] * by_channel, rtol=1e-6)
    assert not zeros[..., CONFIG.F:].any()
    average = spectral.apply_masks(spectrum, masks, "average").numpy()
    expected = spectrum[None, ..., CONFIG.F:] * by_channel.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(average[..., CONFIG.F:], expected, rtol=1e-5)
