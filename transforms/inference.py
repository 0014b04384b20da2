"""SeparateChunks: batched inference with Beam's RunInference and a Spleeter model handler.

The analyze, estimate and synthesize stages of models/chunking.py all run in
this step, as one TensorFlow function on the model's device
(``Separator.separate_chunks``): moving a chunk between workers costs about as
much as separating it, so only the compact waveform chunks travel, never
spectrograms, and only waveforms cross into and out of the device.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from transforms.chunks import KeyedSeparatedChunk, KeyedStashedChunk, SeparatedChunk, TrackChunk
from transforms.stash import Scratch, Stash

BATCH_LATENCY = Metrics.distribution("beamsplitter", "inference_batch_ms")

_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _enable_gpu_memory_growth() -> None:
    """Several SDK processes may share one GPU: none may take all its memory."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass


class SpleeterModelHandler(ModelHandler[TrackChunk, SeparatedChunk, Any]):
    """Loads a separation model once per worker process (or ``model_copies`` per machine); runs batches of chunks.

    A chunk's stems never depend on the batch it came in (``Separator.estimate``).

    ``model_copies``: that many models per machine, shared by all its SDK
    processes through Beam's model sharing, for GPU workers where every SDK
    process would otherwise hold its own copy in GPU memory; only waveforms
    cross over.
    ``checkpoint_sha256``, when given, must match the loaded weights: every
    worker then provably uses the checkpoint the run was planned with.
    ``groups``: a ``StemSelection``'s, the stems synthesized (default: every instrument).
    """

    def __init__(self, model: str, checkpoint: str | None = None, batch_size: int = 4,
                 checkpoint_sha256: str | None = None, model_copies: int | None = None,
                 scratch: Scratch | None = None, precision: str = "fp32", groups=None):
        self.model, self.checkpoint, self.precision = model, checkpoint, precision
        self.batch_size, self.checkpoint_sha256 = batch_size, checkpoint_sha256
        self.copies, self.scratch, self.groups = model_copies, scratch, groups

    def share_model_across_processes(self) -> bool:
        return self.copies is not None

    def model_copies(self) -> int:
        return self.copies or 1

    def load_model(self):
        from models.errors import ModelError
        from models.precision import check_precision
        from models.provider import load_separator

        _enable_gpu_memory_growth()
        # Beam shares a model only within one pipeline; the local runner builds
        # a pipeline per wave of tracks, and each would load and trace it again.
        with _MODELS_LOCK:
            key = (self.model, self.checkpoint, self.precision)
            if key not in _MODELS:
                check_precision(self.precision)  # this worker's CPU (or GPU), not the launcher's
                _MODELS[key] = load_separator(self.model, self.checkpoint, self.precision)
            separator = _MODELS[key]
        if self.checkpoint_sha256 and separator.checkpoint_sha256 != self.checkpoint_sha256:
            raise ModelError(
                f"{self.model}: this worker loaded checkpoint sha256 {separator.checkpoint_sha256}, "
                f"the run was planned with {self.checkpoint_sha256}; pass the same --checkpoint to all workers"
            )
        return separator

    def run_inference(self, batch: Sequence[TrackChunk], model, inference_args=None) -> Iterable[SeparatedChunk]:
        started = time.perf_counter()
        # The batch size pads GPU batches to one shape (see Separator.separate_chunks).
        stems = model.separate_chunks(np.stack([self._samples(chunk) for chunk in batch]), self.batch_size,
                                      self.groups)
        BATCH_LATENCY.update(int((time.perf_counter() - started) * 1000))
        return [SeparatedChunk(c.track, c.fingerprint, c.index, stems[:, i], c.last, c.n_samples)
                for i, c in enumerate(batch)]

    def _samples(self, chunk: TrackChunk) -> np.ndarray:
        return chunk.samples if chunk.samples is not None else self.scratch.load(chunk.uri)

    def batch_elements_kwargs(self):
        # Full batches from the start (BatchElements would otherwise begin at one
        # and grow); a bundle's last batch may still be smaller.
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_num_bytes(self, batch: Sequence[TrackChunk]) -> int:
        return sum(chunk.samples.nbytes if chunk.samples is not None else 512 for chunk in batch)  # 512: a reference

    def get_metrics_namespace(self) -> str:
        return "beamsplitter"


class SeparateChunks(beam.PTransform):
    """``((track_id, index), TrackChunk)`` -> ``((track_id, index), SeparatedChunk)``.

    With ``stash`` (chunk fan-out), the chunks' samples come from scratch
    storage, each separated chunk is written there, and the output is
    ``(track_id, StashedChunk)`` references instead.
    ``resource_hints`` (e.g. ``accelerator=...``) apply to this step (with chunk
    fan-out to it alone, so only inference lands on GPU machines); all of its parts carry them, so that
    they stay fused and neither spectrograms nor separated chunks cross a shuffle.
    """

    def __init__(self, handler: SpleeterModelHandler, resource_hints: dict | None = None,
                 stash: Stash | None = None):
        super().__init__()
        self.handler, self.hints, self.stash = handler, resource_hints or {}, stash

    def expand(self, chunks):
        steps = [("Model", RunInference(KeyedModelHandler(self.handler)).with_output_types(KeyedSeparatedChunk))]
        if self.stash is not None:
            steps.append(("Stash", beam.ParDo(self.stash).with_output_types(KeyedStashedChunk)))
        for name, step in steps:
            chunks = chunks | name >> (step.with_resource_hints(**self.hints) if self.hints else step)
        return chunks
