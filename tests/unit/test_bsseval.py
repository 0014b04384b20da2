"""BSSEval v4 (models.bsseval) against the museval package, frame by frame, to 0.01 dB.

museval's ``evaluate`` is the SiSEC 2018 reference: "images" mode, 512-tap
time-invariant filters fitted over the whole track, 1 s windows and hop. Run
with ``-s`` to see the largest difference of each case.

Music stems are compared as 16-bit files hold them: a stem whose channels are
*exactly* proportional (the synthetic bass) has no unique distortion filter,
and then museval's own figures move by a few hundredths of a dB with rounding.
"""

from __future__ import annotations

import types

import museval
import museval.metrics
import numpy as np
import pytest
import scipy.signal

from models.bsseval import METRICS, bss_eval, frame_bounds, median_over_frames, median_over_tracks
from tests.music import synthesize_stems

TOLERANCE_DB = 0.01
# Exactly dependent references have one projection, hence one set of figures; measured: 9e-7 dB
# from museval's solve, 1e-11 dB from its least-squares fallback.
RANK_DEFICIENT_TOLERANCE_DB = 1e-4
FALLBACK_TOLERANCE_DB = 1e-6
RATE = 44100


def imperfect_separation(references: np.ndarray, seed: int) -> np.ndarray:
    """What a separator might give: each stem coloured, smeared over the channels, with
    some of the other stems leaking in, and a little noise."""
    rng = np.random.default_rng(seed)
    n_sources = len(references)
    estimates = np.empty_like(references)
    for j in range(n_sources):
        colour = rng.uniform(-0.3, 1.0, size=5)
        colour[0] = 1.0
        own = scipy.signal.lfilter(colour, [1.0], references[j], axis=0)
        own = own @ np.array([[0.9, 0.15], [0.1, 0.85]])
        leak = sum(rng.uniform(0.05, 0.3) * references[k] for k in range(n_sources) if k != j)
        estimates[j] = own + leak + 0.01 * rng.standard_normal(own.shape)
    return estimates


def museval_metrics(references, estimates, window, hop) -> np.ndarray:
    """``[4, n_sources, n_frames]`` in METRICS order (museval returns SDR, ISR, SIR, SAR)."""
    return np.array(museval.evaluate(references, estimates, win=window, hop=hop))


def assert_as_museval(references, estimates, window=RATE, hop=RATE) -> np.ndarray:
    ours = bss_eval(references, estimates, window=window, hop=hop).values()
    theirs = museval_metrics(references, estimates, window, hop)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    scored = ~np.isnan(ours)
    assert scored.any()
    worst = np.abs(ours[scored] - theirs[scored]).max()
    print(f"\nmax |ours - museval| = {worst:.2e} dB over {scored.sum()} values")
    for m, name in enumerate(METRICS):
        assert np.abs(ours[m][scored[m]] - theirs[m][scored[m]]).max() <= TOLERANCE_DB, name
    return ours


@pytest.mark.slow  # museval's own evaluation beside ours
def test_music_stems_match_museval():
    """Four synthetic music stems, 3.5 s: three full 1 s frames, the last half second left out."""
    music = synthesize_stems(3.5, seed=5)
    references = np.stack([music[name] for name in ("vocals", "drums", "bass", "other")]).astype(np.float64)
    references = np.round(references * 32767) / 32767
    estimates = imperfect_separation(references, seed=1)
    ours = assert_as_museval(references, estimates)
    assert ours.shape == (4, 4, 3)
    assert np.all(np.isfinite(ours))
    # an imperfect separation: every figure finite and in a plausible range
    assert np.all((ours > -10) & (ours < 40))


def test_silent_frames_and_overlapping_frames_match_museval():
    """A silent reference frame and a silent estimate frame blank their frames for every source."""
    rng = np.random.default_rng(2)
    rate = 8000
    references = rng.standard_normal((2, int(4.6 * rate), 2))
    references[:, :, 1] = scipy.signal.lfilter([1, 0.5], [1], references[:, :, 0], axis=1)
    references[1, rate:2 * rate] = 0.0  # frame 1 of source 1
    estimates = imperfect_separation(references, seed=3)
    estimates[0, 3 * rate:4 * rate] = 0.0  # frame 3 of estimate 0
    ours = assert_as_museval(references, estimates, window=rate, hop=rate)
    assert ours.shape == (4, 2, 4)
    assert np.isnan(ours[:, :, [1, 3]]).all() and not np.isnan(ours[:, :, [0, 2]]).any()
    # half-overlapping frames: every one that touches a silent second is blanked
    overlapping = assert_as_museval(references, estimates, window=rate, hop=rate // 2)
    assert overlapping.shape == (4, 2, 8)


def test_a_track_shorter_than_the_window_is_one_frame():
    rng = np.random.default_rng(4)
    references = rng.standard_normal((2, 6000, 2))
    ours = assert_as_museval(references, imperfect_separation(references, seed=5), window=8000, hop=8000)
    assert ours.shape == (4, 2, 1)
    assert frame_bounds(6000, 8000, 8000) == [(0, 6000)]
    assert frame_bounds(20000, 8000, 8000) == [(0, 8000), (8000, 16000)]


def test_a_perfect_estimate_has_no_distortion():
    references = np.random.default_rng(6).standard_normal((2, 3 * 8000, 2))
    metrics = bss_eval(references, references.copy(), window=8000, hop=8000)
    assert np.all(metrics.sdr == np.inf)
    assert np.all(metrics.sir > 100) and np.all(metrics.sar > 100) and np.all(metrics.isr > 100)


def test_a_source_silent_throughout_gives_nan_where_museval_refuses():
    references = np.random.default_rng(7).standard_normal((2, 3 * 8000, 2))
    estimates = references.copy()
    estimates[1] = 0.0
    with pytest.raises(ValueError):
        museval.evaluate(references, estimates, win=8000, hop=8000)
    assert np.isnan(bss_eval(references, estimates, window=8000, hop=8000).values()).all()


@pytest.mark.slow  # museval's own evaluation beside ours
def test_dual_mono_and_silent_stems_match_museval():
    """References as real datasets hold them, 16-bit: dual-mono vocals (left and right the same
    samples) with stretches of digital silence, and a bass whose right channel is silent throughout.

    The dual-mono stem makes the filters' Gram matrix exactly singular, which stopped the scoring with
    a LinAlgError; museval scores the track, and every figure must be its own. A stem silent
    throughout (an instrumental's vocals) is refused by museval and gives no figure here.
    """
    rate, seconds = RATE, 20.0
    music = synthesize_stems(seconds, seed=11)
    references = np.stack([music[name] for name in ("vocals", "drums", "bass", "other")]).astype(np.float64)
    references[0, :, 1] = references[0, :, 0]
    references[0, int(2.5 * rate):6 * rate] = 0.0  # frames 3 to 5 silent, frame 2 half
    references[0, 12 * rate:int(13.2 * rate)] = 0.0  # frame 12 silent, frame 13 in part
    references[2, :, 1] = 0.0
    references = np.round(references * 32767) / 32767
    estimates = imperfect_separation(references, seed=2)
    ours = bss_eval(references, estimates).values()
    theirs = museval_metrics(references, estimates, RATE, RATE)
    assert ours.shape == theirs.shape == (4, 4, 20)
    silent = [3, 4, 5, 12]
    assert np.isnan(theirs[:, :, silent]).all()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    scored = ~np.isnan(theirs)
    assert scored.sum() == 4 * 4 * (20 - len(silent))
    print(f"\nmax |ours - museval| = {np.abs(ours[scored] - theirs[scored]).max():.2e} dB")
    np.testing.assert_allclose(ours[scored], theirs[scored], rtol=0, atol=RANK_DEFICIENT_TOLERANCE_DB)

    references[0] = 0.0
    with pytest.raises(ValueError, match="silent"):
        museval.evaluate(references, estimates, win=RATE, hop=RATE)
    assert np.isnan(bss_eval(references, estimates).values()).all()

@pytest.mark.slow  # museval's own evaluation beside ours
def test_dual_mono_matches_museval_least_squares_fallback(monkeypatch):
    """museval's fallback for a singular matrix (minimum-norm least squares) gives these figures too.

    On real data museval never reaches it: its Gram matrix is not bit for bit symmetric, so rounding
    leaves its solve a pivot, and the fallback's ``except`` names ``np.linalg.linalg``, which numpy
    2.4 no longer has. So here museval's solve refuses, as on an exactly singular matrix, and
    museval's own fallback code computes the figures.
    """
    fallbacks = []

    def refuse(matrix, rhs):
        raise np.linalg.LinAlgError("Singular matrix")

    def lstsq(*args, **kwargs):
        fallbacks.append(args[0].shape)
        return np.linalg.lstsq(*args, **kwargs)

    class NumpyWhoseSolveRefuses:
        linalg = types.SimpleNamespace(solve=refuse, lstsq=lstsq, linalg=np.linalg)

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(museval.metrics, "np", NumpyWhoseSolveRefuses())
    rate = 8000
    music = synthesize_stems(10.0, seed=3, sample_rate=rate)
    references = np.stack([music["vocals"], music["accompaniment"]]).astype(np.float64)
    references[0, :, 1] = references[0, :, 0]
    references[0, int(2.5 * rate):6 * rate] = 0.0
    references = np.round(references * 32767) / 32767
    estimates = imperfect_separation(references, seed=2)
    theirs = museval_metrics(references, estimates, rate, rate)
    assert fallbacks  # museval's least squares ran
    ours = bss_eval(references, estimates, window=rate, hop=rate).values()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.isnan(theirs[:, :, 3:6]).all() and not np.isnan(theirs[:, :, [0, 1, 2, 6, 7, 8, 9]]).any()
    scored = ~np.isnan(theirs)
    print(f"\nmax |ours - museval's least squares| = {np.abs(ours[scored] - theirs[scored]).max():.2e} dB")
    np.testing.assert_allclose(ours[scored], theirs[scored], rtol=0, atol=FALLBACK_TOLERANCE_DB)

def test_shapes_must_agree():
    with pytest.raises(ValueError, match="must both be"):
        bss_eval(np.zeros((2, 100, 2)), np.zeros((2, 90, 2)))


def test_aggregation_is_sisecs():
    """Median over frames (NaN frames left out), then over tracks, as museval's MethodStore."""
    rng = np.random.default_rng(8)
    rate = 8000
    method = museval.EvalStore()
    per_track = []
    for track in range(3):
        references = rng.standard_normal((2, 5 * rate, 2))
        references[0, (track + 1) * rate:(track + 2) * rate] = 0.0  # one blank frame per track
        metrics = bss_eval(references, imperfect_separation(references, seed=track), window=rate, hop=rate)
        per_track.append(median_over_frames(metrics))
        store = museval.TrackStore(win=1, hop=1, track_name=f"track {track}")
        for j, target in enumerate(("a", "b")):
            store.add_target(target, {name.upper(): getattr(metrics, name)[j].tolist() for name in METRICS})
        method.add_track(store)
    theirs = method.agg_frames_tracks_scores()
    for name in METRICS:
        ours = median_over_tracks(np.stack([t[name] for t in per_track]))
        for j, target in enumerate(("a", "b")):
            # museval stores scores rounded to 1e-5 dB
            assert ours[j] == pytest.approx(theirs.loc[(target, name.upper())], abs=1e-4)
