"""SeparateChunks: batched inference with Beam's RunInference and a Spleeter model handler.

STFT, network, masks and inverse STFT all run in this step, next to the model:
moving a chunk between workers costs about as much as separating it, so only
the compact waveform chunks travel, never spectrograms. The network runs on
the bundle's thread (RunInference); masking and the inverse STFT, a third of
the work on a CPU, run behind it on a thread of their own.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from transforms.background import BackgroundDoFn
from transforms.chunks import EstimatedChunk, KeyedEstimatedChunk, KeyedSeparatedChunk, SeparatedChunk, TrackChunk

BATCH_LATENCY = Metrics.distribution("beamsplitter", "inference_batch_ms")

# One model per process and configuration: the local runner builds a pipeline
# per wave of tracks, and each would otherwise load and trace the network again.
_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _enable_gpu_memory_growth() -> bool:
    """Several SDK processes share one GPU on Dataflow: none may take all its memory.

    Returns whether there is a GPU.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    return bool(gpus)


class SpleeterModelHandler(ModelHandler[TrackChunk, EstimatedChunk, Any]):
    """Loads a separation model once per worker process; separates batches of chunks.

    On a GPU, batches are padded to ``batch_size`` so the network always sees
    one shape (no re-tuning of kernels per shape); on a CPU padding would only
    waste time. ``checkpoint_sha256``, when given, must match the loaded weights: every
    worker then provably uses the checkpoint the run was planned with.
    """

    def __init__(self, model: str, checkpoint: str | None = None, batch_size: int = 4,
                 checkpoint_sha256: str | None = None):
        self.model, self.checkpoint = model, checkpoint
        self.batch_size, self.checkpoint_sha256 = batch_size, checkpoint_sha256

    def load_model(self):
        from models.errors import ModelError
        from models.provider import load_separator

        self._pad = _enable_gpu_memory_growth()
        with _MODELS_LOCK:
            key = (self.model, self.checkpoint)
            if key not in _MODELS:
                _MODELS[key] = load_separator(self.model, self.checkpoint)
            separator = _MODELS[key]
        if self.checkpoint_sha256 and separator.checkpoint_sha256 != self.checkpoint_sha256:
            raise ModelError(
                f"{self.model}: this worker loaded checkpoint sha256 {separator.checkpoint_sha256}, "
                f"the run was planned with {self.checkpoint_sha256}; pass the same --checkpoint to all workers"
            )
        return separator

    def run_inference(self, batch: Sequence[TrackChunk], model, inference_args=None) -> Iterable[EstimatedChunk]:
        started = time.perf_counter()
        spectra, magnitudes = zip(*(model.analyze(chunk.samples) for chunk in batch))
        slots = max(self.batch_size, len(batch)) if getattr(self, "_pad", False) else len(batch)
        stacked = np.zeros((slots,) + magnitudes[0].shape, np.float32)
        stacked[: len(batch)] = magnitudes
        estimates = model.estimate(stacked)
        BATCH_LATENCY.update(int((time.perf_counter() - started) * 1000))
        # The waveform is not needed any more: the spectrum says it all.
        return [EstimatedChunk(dataclasses.replace(c, samples=None), spectra[i], estimates[:, i])
                for i, c in enumerate(batch)]

    def batch_elements_kwargs(self):
        # Full batches from the start (BatchElements would otherwise begin at one
        # and grow); a bundle's last batch may still be smaller.
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_num_bytes(self, batch: Sequence[TrackChunk]) -> int:
        return sum(chunk.samples.nbytes for chunk in batch)

    def get_metrics_namespace(self) -> str:
        return "beamsplitter"


class _Synthesize(BackgroundDoFn):
    """``(key, EstimatedChunk)`` -> ``(key, SeparatedChunk)``: masks and inverse STFT, off the bundle's thread."""

    def __init__(self, model: str, batch_size: int):
        self.model, self.in_flight = model, batch_size

    def setup(self):
        from models.config import load_config

        self.config = load_config(self.model)
        super().setup()

    def work(self, keyed):
        from models import spectral

        key, estimated = keyed
        c = estimated.chunk
        stems = spectral.synthesize(estimated.spectrum, estimated.estimates, self.config)
        return key, SeparatedChunk(c.track, c.fingerprint, c.index, stems, c.last, c.n_samples)


class SeparateChunks(beam.PTransform):
    """``((track_id, index), TrackChunk)`` -> ``((track_id, index), SeparatedChunk)``.

    ``resource_hints`` (e.g. ``accelerator=...``) apply to this step alone, so
    only inference lands on GPU machines; both of its parts carry them, so that
    they stay fused and the spectrograms never leave the machine.
    """

    def __init__(self, handler: SpleeterModelHandler, resource_hints: dict | None = None):
        super().__init__()
        self.handler, self.hints = handler, resource_hints or {}

    def expand(self, chunks):
        steps = [("Network", RunInference(KeyedModelHandler(self.handler)).with_output_types(KeyedEstimatedChunk)),
                 ("Synthesize", beam.ParDo(_Synthesize(self.handler.model, self.handler.batch_size))
                  .with_output_types(KeyedSeparatedChunk))]
        for name, step in steps:
            chunks = chunks | name >> (step.with_resource_hints(**self.hints) if self.hints else step)
        return chunks
