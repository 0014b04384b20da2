"""The chunk maths as one TensorFlow function (Separator.separate_chunks), on this machine's CPU.

* It gives the stems of the stages run one by one on the host in numpy (the
  path beamsplitter took before, written out here as Spleeter's maths) within
  the parity suite's bound for float stems.
* A chunk's stems do not depend on the chunks it is batched with, nor on its
  place in the batch: runners batch differently and must write the same bytes.
"""

import math

import numpy as np
import pytest

from models import decoding
from models.chunking import segments
from models.provider import load_separator

# tests/parity's bar for float stems against Spleeter (MIN_SNR_FLOAT_DB).
MIN_SNR_FLOAT_DB = 85.0


@pytest.fixture(scope="module")
def separator(checkpoint_2stems):
    return load_separator("spleeter:2stems", str(checkpoint_2stems))


@pytest.fixture(scope="module")
def chunks(separator, music_track) -> np.ndarray:
    """Four distinct chunks ``[4, span, 2]``: the music's three (the last mostly padding) and noise."""
    music = [s.samples for s in segments([decoding.load(str(music_track), 44100)], separator.geometry)]
    noise = 0.1 * np.random.default_rng(4).standard_normal(music[0].shape)
    return np.stack(music + [noise]).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return math.inf if error == 0 else 10 * math.log10(np.sum(reference.astype(np.float64) ** 2) / error)


def numpy_stems(separator, samples: np.ndarray) -> np.ndarray:
    """One chunk's stems ``[n, span, 2]`` with the STFT, masks and inverse STFT in numpy around the network."""
    config = separator.config
    L, H = config.frame_length, config.frame_step
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / L)).astype(np.float32)  # periodic Hann
    n_frames = 1 + (len(samples) - L) // H
    frames = np.stack([samples[t * H:t * H + L] for t in range(n_frames)])  # [T, L, 2]
    spectrum = np.fft.rfft(frames * window[:, None], axis=1).astype(np.complex64)  # [T, bins, 2]
    estimates = separator.estimate(np.abs(spectrum[None, :, :config.F]))[:, 0]  # [n, T, F, 2]
    powered = estimates ** np.float32(config.separation_exponent)
    masks = (powered + np.float32(1e-10 / len(estimates))) / (powered.sum(axis=0) + np.float32(1e-10))
    masked = np.zeros((len(estimates),) + spectrum.shape, np.complex64)
    masked[:, :, :config.F] = spectrum[None, :, :config.F] * masks  # mask_extension "zeros"
    inverse = np.fft.irfft(masked, n=L, axis=2).astype(np.float32) * (window[:, None] * np.float32(2 / 3))
    stems = np.zeros((len(estimates), len(samples), 2), np.float32)
    for t in range(n_frames):
        stems[:, t * H:t * H + L] += inverse[:, t]
    return stems


def test_the_chunk_function_gives_the_numpy_stages_stems(separator, chunks):
    assert separator.config.mask_extension == "zeros"
    stems = separator.separate_chunks(chunks[:2])
    assert stems.shape == (2, 2) + chunks.shape[1:]
    for i in range(2):
        expected = numpy_stems(separator, chunks[i])
        for k, name in enumerate(separator.instruments):
            assert snr_db(expected[k], stems[k, i]) >= MIN_SNR_FLOAT_DB, (i, name)


def test_a_chunks_stems_do_not_depend_on_its_batch_neighbours_or_position(separator, chunks):
    alone = [separator.separate_chunks(chunk[None], batch_size=4)[:, 0] for chunk in chunks]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 0], [2, 0, 3]):
        batched = separator.separate_chunks(chunks[order], batch_size=4)
        for position, i in enumerate(order):
            assert np.array_equal(batched[:, position], alone[i]), (
                f"chunk {i} at position {position} of a batch of {order} differs from chunk {i} alone")


# What starts each kind of process that runs the model: `beamsplitter` (separate, and the local
# runner's driver, whose worker processes inherit its environment), and an SDK worker of any
# runner, which unpickles the model handler before it loads the model.
ENTRIES = {
    "the CLI": "import pipeline.cli",
    "an SDK worker": "import pickle; pickle.loads({pickled!r})",
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_process_that_runs_the_model_loads_tensorflow_with_onednn(entry):
    import os
    import pickle
    import subprocess
    import sys

    from models.encoding import EncodeOptions
    from models.ffmpeg_process import IOLimits
    from models.stems import StemSelection
    from transforms.catalogue.layout import Layout
    from transforms.inference import SpleeterModelHandler
    from transforms.job import FanOut, JobSettings

    job = JobSettings(model="spleeter:2stems", checkpoint=None, checkpoint_sha256="", precision="fp32",
                      model_id="spleeter:2stems", layout=Layout("out", "2stems"), run_id="run",
                      encoding=EncodeOptions(), io=IOLimits(), selection=StemSelection.all_of(("vocals", "accompaniment")),
                      fan_out=FanOut.TRACKS, batch_size=4)
    pickled = pickle.dumps(SpleeterModelHandler(job))
    probe = "; ".join([
        ENTRIES[entry].format(pickled=pickled),
        "import os, sys",
        "loaded = 'tensorflow' in sys.modules",
        "from tensorflow.python.util import _pywrap_util_port",
        "print(loaded, os.environ.get('TF_ENABLE_ONEDNN_OPTS'), _pywrap_util_port.IsMklEnabled())",
    ])
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", probe], env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            capture_output=True, text=True, check=True)
    # Set before TensorFlow loads (it reads the variable once), and TensorFlow took it.
    assert result.stdout.split() == ["False", "1", "True"], result.stdout
