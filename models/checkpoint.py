"""Reading and writing checkpoints in Spleeter's format.

A Spleeter model directory holds a TensorFlow tensor bundle (``model.index``,
``model.data-00000-of-00001``), a ``checkpoint`` file naming it, and a
``.probe`` file that Spleeter's model provider takes as "already downloaded".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from models.config import SeparationConfig
from models.errors import ModelError

# TensorFlow (and the network, which needs it) is imported by the functions that read or write
# tensors: finding, fetching and checking a checkpoint must not wait seconds on its import.

PREFIX = "model"
BUNDLE_FILES = ("model.index", "model.data-00000-of-00001")


def is_checkpoint_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in BUNDLE_FILES)


def read_weights(directory: Path, config: SeparationConfig) -> dict[str, np.ndarray]:
    """The network weights of ``config`` from Spleeter checkpoint ``directory``."""
    import tensorflow as tf

    from models.unet import variable_shapes

    if not is_checkpoint_dir(directory):
        raise ModelError(f"{directory}: not a Spleeter checkpoint (expected {', '.join(BUNDLE_FILES)})")
    try:
        reader = tf.train.load_checkpoint(str(directory / PREFIX))
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelError(f"{directory}: unreadable checkpoint ({exc.message if hasattr(exc, 'message') else exc})") from None
    available = reader.get_variable_to_shape_map()
    weights = {}
    for name, shape in variable_shapes(config).items():
        if name not in available:
            raise ModelError(
                f"{directory}: checkpoint has no variable {name!r} needed by {config.name} "
                f"({len(config.instruments)} instruments)"
            )
        if tuple(available[name]) != shape:
            raise ModelError(
                f"{directory}: variable {name!r} has shape {tuple(available[name])}, {config.name} needs {shape}"
            )
        weights[name] = reader.get_tensor(name).astype(np.float32)
    return weights


def write_checkpoint(directory: Path, weights: dict[str, np.ndarray], global_step: int = 0) -> None:
    """Write ``weights`` as a Spleeter checkpoint that Spleeter itself can load."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(weights) + ["global_step"]
    tensors = [tf.constant(weights[n], tf.float32) for n in names[:-1]]
    tensors.append(tf.constant(global_step, tf.int64))
    tf.raw_ops.SaveV2(
        prefix=str(directory / PREFIX),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    (directory / "checkpoint").write_text(
        f'model_checkpoint_path: "{PREFIX}"\nall_model_checkpoint_paths: "{PREFIX}"\n'
    )
    (directory / ".probe").write_text("OK")


def checkpoint_digest(directory: Path) -> str:
    """sha256 over the bundle files: identifies the weights in output metadata."""
    digest = hashlib.sha256()
    for name in BUNDLE_FILES:
        with open(directory / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def random_weights(config: SeparationConfig, seed: int, scale: float = 0.4) -> dict[str, np.ndarray]:
    """He-uniform weights (``he_uniform``, as training starts) shrunk by ``scale``, with non-trivial
    batch-norm statistics.

    For tests and benchmarks of architectures whose trained weights are not at
    hand. On the demo's synthetic music at 0.4, 4stems' masks span 0.01..0.89
    (1st to 99th percentile) with 1.4 % of them below 0.01 or above 0.99 (5stems:
    2.9 %), and the instruments are clearly distinct; at 0.6 5stems saturates
    10 % of its masks, where errors would be invisible.
    """
    from models.unet import he_uniform, variable_shapes

    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in variable_shapes(config).items():
        kind = name.rsplit("/", 1)[1]
        if kind == "kernel":
            value = he_uniform(shape, rng) * scale
        elif kind in ("bias", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.05, shape)
        elif kind == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # moving_variance
            value = rng.uniform(0.5, 2.0, shape)
        weights[name] = value.astype(np.float32)
    return weights
