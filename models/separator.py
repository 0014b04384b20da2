"""A separation model loaded for inference: the chunk stages of models/chunking.py on its device, and whole waveforms."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.chunking import ChunkGeometry, overlap_add, segments, separate_chunks, separate_stream
from models.config import SeparationConfig
from models.precision import DEFAULT_PRECISION, model_id
from models.unet import SeparationNetwork


class Separator:
    """A configuration with its network weights loaded, ready to separate chunks.

    Build it once per process: the network is traced on the first call and
    reused for every chunk of every track after that.
    """

    def __init__(self, config: SeparationConfig, weights: dict[str, np.ndarray], checkpoint_sha256: str = "",
                 precision: str = DEFAULT_PRECISION):
        self.config = config
        self.geometry = ChunkGeometry.of(config)
        self.checkpoint_sha256, self.precision = checkpoint_sha256, precision
        self.network = SeparationNetwork(config, weights, precision)
        self.on_gpu = bool(tf.config.list_physical_devices("GPU"))
        self.batches_on_cpu = onednn_enabled()
        self._functions: dict = {}  # StemSelection.groups (None: every instrument) -> its TensorFlow function

    @property
    def model_id(self) -> str:
        """Configuration, weights and precision, as recorded in output metadata."""
        return model_id(self.config.name, self.checkpoint_sha256, self.precision)

    @property
    def instruments(self) -> tuple[str, ...]:
        return self.config.instruments

    def separate_chunks(self, samples: np.ndarray, batch_size: int | None = None, groups=None) -> np.ndarray:
        """Stems ``[n_instruments, B, span, 2]`` of chunks' samples ``[B, span, 2]``; with ``groups``
        (``StemSelection.groups``) those of the selection only, ``[len(groups), B, span, 2]``.

        The analysis, the network, the masks and the inverse STFT in one
        TensorFlow function on the model's device: only waveforms cross.
        """
        return self._batched(self.chunk_function(groups), samples, batch_size)

    def chunk_function(self, groups=None):
        """The TensorFlow function of ``separate_chunks`` for ``groups``, traced on its first call."""
        groups = None if groups is None else tuple(tuple(group) for group in groups)
        if groups not in self._functions:
            self._functions[groups] = tf.function(
                lambda chunks: separate_chunks(chunks, self.network.predict, self.config, groups),
                input_signature=[tf.TensorSpec([None, self.geometry.span, self.config.n_channels], tf.float32)],
                reduce_retracing=True,
                autograph=False,  # nothing to convert (see SeparationNetwork)
            )
        return self._functions[groups]

    def estimate(self, magnitudes: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Network estimates ``[n_instruments, B, T, F, 2]`` for magnitudes ``[B, T, F, 2]``."""
        return self._batched(self.network, magnitudes, batch_size)

    def _batched(self, function, inputs: np.ndarray, batch_size: int | None) -> np.ndarray:
        """``function`` (instruments first) on ``inputs`` ``[B, ...]``, batched so that no chunk depends on its batch.

        A chunk's stems must not depend on how it was batched, or runners
        that batch differently would write different bytes. oneDNN's CPU
        kernels (models/__init__.py turns them on) compute every chunk of a
        batch as they would compute it alone (tests/unit/test_chunk_function.py
        holds this on the machine the tests run on), so on a CPU the model
        takes whole batches (the network's time per chunk drops by 2 to 5 %
        on a 2-core AMD EPYC). Without oneDNN, TensorFlow's own kernels round
        a chunk differently on some CPUs (by ~1e-7, enough to flip a 16-bit
        sample) depending on which chunks share its batch: there it runs
        chunk by chunk. On a GPU it runs on batches of ``batch_size`` chunks,
        the last padded, so that it always sees one shape.
        """
        if not self.on_gpu:
            if self.batches_on_cpu:
                return function(inputs).numpy()
            return np.concatenate([function(x[None]).numpy() for x in inputs], axis=1)
        n = len(inputs)
        if batch_size is None or n % batch_size == 0:
            return function(inputs).numpy()
        padded = np.zeros((-(-n // batch_size) * batch_size,) + inputs.shape[1:], np.float32)
        padded[:n] = inputs
        return function(padded).numpy()[:, :n]

    def full_band(self, estimates: np.ndarray) -> np.ndarray:
        """Estimates ``[n, T, F, 2]`` zero-padded to all STFT bins, as Spleeter feeds its Wiener filter."""
        pad = [(0, 0)] * estimates.ndim
        pad[-2] = (0, self.config.n_bins - self.config.F)
        return np.pad(estimates, pad)

    def separate(self, waveform: np.ndarray, batch_size: int = 4, selection=None) -> dict[str, np.ndarray]:
        """Separate a whole in-memory waveform ``[n_samples, 2]``; returns ``[n_samples, 2]`` per instrument
        (per stem of ``selection``, a ``StemSelection``, when given)."""
        groups, names = (None, self.instruments) if selection is None else (selection.groups, selection.names)
        stream = segments([np.asarray(waveform, np.float32)], self.geometry)
        chunks = separate_stream(
            stream, lambda batch: self.separate_chunks(np.stack([s.samples for s in batch]), batch_size, groups),
            batch_size)
        return dict(zip(names, overlap_add(chunks, self.geometry)))


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its CPU kernels with oneDNN (decided as it loaded)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # TensorFlow moved it: run chunk by chunk, which is always safe
        return False
    return bool(_pywrap_util_port.IsMklEnabled())
