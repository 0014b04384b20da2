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
from transforms.job import FanOut, JobSettings
from transforms.stash import Stash

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

    The job's settings (``JobSettings``) say which model, checkpoint and
    precision to load, the batch size, the stems to synthesize and where
    chunk fan-out parks chunks. ``model_copies``: that many models per
    machine, shared by all its SDK processes through Beam's model sharing,
    for GPU workers where every SDK process would otherwise hold its own copy
    in GPU memory; only waveforms cross over. The loaded weights must have
    the digest the run was planned with: every worker then provably uses
    that checkpoint.
    """

    def __init__(self, job: JobSettings):
        self.job = job

    def share_model_across_processes(self) -> bool:
        return self.job.model_copies is not None

    def model_copies(self) -> int:
        return self.job.model_copies or 1

    def load_model(self):
        from models.errors import ModelError
        from models.precision import check_precision
        from models.provider import load_separator

        _enable_gpu_memory_growth()
        # Beam shares a model only within one pipeline; the local runner builds
        # a pipeline per wave of tracks, and each would load and trace it again.
        job = self.job
        with _MODELS_LOCK:
            key = (job.model, job.checkpoint, job.precision)
            if key not in _MODELS:
                check_precision(job.precision)  # this worker's CPU (or GPU), not the launcher's
                _MODELS[key] = load_separator(job.model, job.checkpoint, job.precision)
            separator = _MODELS[key]
        if job.checkpoint_sha256 and separator.checkpoint_sha256 != job.checkpoint_sha256:
            raise ModelError(
                f"{job.model}: this worker loaded checkpoint sha256 {separator.checkpoint_sha256}, "
                f"the run was planned with {job.checkpoint_sha256}; pass the same --checkpoint to all workers"
            )
        return separator

    def run_inference(self, batch: Sequence[TrackChunk], model, inference_args=None) -> Iterable[SeparatedChunk]:
        started = time.perf_counter()
        # The batch size pads GPU batches to one shape (see Separator.separate_chunks).
        stems = model.separate_chunks(np.stack([self._samples(chunk) for chunk in batch]), self.job.batch_size,
                                      self.job.selection.groups)
        BATCH_LATENCY.update(int((time.perf_counter() - started) * 1000))
        return [SeparatedChunk(c.track, c.fingerprint, c.index, stems[:, i], c.last, c.n_samples)
                for i, c in enumerate(batch)]

    def _samples(self, chunk: TrackChunk) -> np.ndarray:
        return chunk.samples if chunk.samples is not None else self.job.scratch.load(chunk.uri)

    def batch_elements_kwargs(self):
        # Full batches from the start (BatchElements would otherwise begin at one
        # and grow); a bundle's last batch may still be smaller.
        return {"min_batch_size": self.job.batch_size, "max_batch_size": self.job.batch_size}

    def get_num_bytes(self, batch: Sequence[TrackChunk]) -> int:
        return sum(chunk.samples.nbytes if chunk.samples is not None else 512 for chunk in batch)  # 512: a reference

    def get_metrics_namespace(self) -> str:
        return "beamsplitter"


class SeparateChunks(beam.PTransform):
    """``((track_id, index), TrackChunk)`` -> ``((track_id, index), SeparatedChunk)``.

    With chunk fan-out, the chunks' samples come from scratch storage, each
    separated chunk is written there, and the output is ``(track_id,
    StashedChunk)`` references instead. The job's accelerator hint applies to
    this step (with chunk fan-out to it alone, so only inference lands on GPU
    machines); all of its parts carry it, so that they stay fused and neither
    spectrograms nor separated chunks cross a shuffle.
    """

    def __init__(self, job: JobSettings):
        super().__init__()
        self.job = job

    def expand(self, chunks):
        steps = [("Model", RunInference(KeyedModelHandler(SpleeterModelHandler(self.job)))
                  .with_output_types(KeyedSeparatedChunk))]
        if self.job.fan_out is FanOut.CHUNKS:
            steps.append(("Stash", beam.ParDo(Stash(self.job.scratch)).with_output_types(KeyedStashedChunk)))
        for name, step in steps:
            chunks = chunks | name >> (step.with_resource_hints(accelerator=self.job.accelerator)
                                       if self.job.accelerator else step)
        return chunks
