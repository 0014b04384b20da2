"""Export a loaded model as a TensorFlow SavedModel, for serving it outside beamsplitter.

``beamsplitter export-model`` writes it; nothing in beamsplitter reads it back (the pipeline
loads checkpoints, models/provider.py), so it is for a model server or another program.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from models.errors import ModelError
from models.separator import Separator


def export_saved_model(separator: Separator, directory: str) -> None:
    """Write ``separator``'s network to ``directory``, replacing it atomically.

    Signature ``serving_default``: input ``magnitude`` float32 ``[B, T, F, 2]``,
    one output per instrument, float32 ``[B, T, F, 2]`` (the network's
    spectrogram estimates; masks and inverse STFT are applied by the caller).
    """
    network = separator.network
    config = separator.config
    spec = tf.TensorSpec([None, config.T, config.F, config.n_channels], tf.float32, name="magnitude")

    @tf.function(input_signature=[spec])
    def serve(magnitude):
        estimates = network.predict(magnitude)
        return {name: estimates[i] for i, name in enumerate(config.instruments)}

    network.serve = serve
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=".export-")
    try:
        tf.saved_model.save(network, staging, signatures={"serving_default": serve})
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.rename(staging, directory)
    except OSError as exc:
        raise ModelError(f"{directory}: cannot write SavedModel ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
