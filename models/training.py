"""Training a separation network: Spleeter's loss, optimizer and batch-norm behaviour, in TensorFlow 2.

The network is ``SeparationNetwork`` itself, so the trained variables keep
Spleeter's checkpoint names and ``write_checkpoint`` gives a folder that
beamsplitter and Spleeter load alike.

Batch normalisation: Spleeter builds its U-Net from Keras layers inside a
TF1 estimator and never sets Keras' learning phase, which defaults to
inference. Its training therefore normalises with the moving statistics,
never updates them (the released checkpoints hold exactly 0 and 1) and never
applies its dropout layers; batch norm is a trainable per-channel scale and
offset. Training here does the same: it runs the very function inference
runs, trains kernels, biases, gammas and betas, and leaves the moving
statistics as they were loaded. What training optimised is then exactly what
either engine computes from the written checkpoint.

Shapes: mixtures ``[B, T, F, 2]``, targets and estimates
``[n_instruments, B, T, F, 2]`` (magnitudes).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from models.config import SeparationConfig
from models.errors import ConfigError
from models.precision import DEFAULT_PRECISION
from models.unet import SeparationNetwork, he_uniform, variable_shapes

TRAINABLE = ("kernel", "bias", "gamma", "beta")
OPTIMIZERS = ("Adam", "Adadelta", "SGD")


def l1_mask_loss(estimates, targets):
    """Spleeter's ``L1_mask``: the sum over instruments of the mean absolute error."""
    return tf.reduce_sum(tf.reduce_mean(tf.abs(estimates - targets), axis=[1, 2, 3, 4]))


def weighted_l1_mask_loss(estimates, targets):
    """Spleeter's ``weighted_L1_mask``: each example's error weighted by its target's mean magnitude."""
    weight = tf.reduce_mean(targets, axis=[2, 3, 4], keepdims=True)
    return tf.reduce_sum(tf.reduce_mean(weight * tf.abs(estimates - targets), axis=[1, 2, 3, 4]))


LOSSES = {"L1_mask": l1_mask_loss, "weighted_L1_mask": weighted_l1_mask_loss}


@dataclass(frozen=True)
class TrainingParams:
    """The training fields of a Spleeter configuration, with Spleeter's defaults.

    Not ``train_max_steps``: how long to train is the command's ``--steps`` or ``--epochs``.
    """

    learning_rate: float = 1e-4
    batch_size: int = 8
    loss_type: str = "L1_mask"
    optimizer: str = "Adam"
    random_seed: int = 0
    save_checkpoints_steps: int | None = None
    chunk_duration: float = 20.0
    n_chunks_per_song: int = 2

    @classmethod
    def of(cls, config: SeparationConfig) -> "TrainingParams":
        raw = config.raw
        try:
            params = cls(
                learning_rate=float(raw.get("learning_rate", cls.learning_rate)),
                batch_size=int(raw.get("batch_size", cls.batch_size)),
                loss_type=str(raw.get("loss_type", cls.loss_type)),
                optimizer=str(raw.get("optimizer", cls.optimizer)),
                random_seed=int(raw.get("random_seed", cls.random_seed)),
                save_checkpoints_steps=int(raw["save_checkpoints_steps"]) if raw.get("save_checkpoints_steps") else None,
                chunk_duration=float(raw.get("chunk_duration", cls.chunk_duration)),
                n_chunks_per_song=int(raw.get("n_chunks_per_song", cls.n_chunks_per_song)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model configuration {config.name}: {exc}") from None
        problems = []
        if params.loss_type not in LOSSES:
            problems.append(f"loss_type must be one of {', '.join(LOSSES)}")
        if params.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if params.batch_size < 1 or params.n_chunks_per_song < 1 or params.learning_rate <= 0:
            problems.append("batch_size, n_chunks_per_song and learning_rate must be positive")
        if params.chunk_duration * config.sample_rate < (config.T - 1) * config.frame_step + config.frame_length:
            problems.append(f"chunk_duration {params.chunk_duration:g} s is shorter than T={config.T} frames")
        if problems:
            raise ConfigError(f"model configuration {config.name}: " + "; ".join(problems))
        return params


def initial_weights(config: SeparationConfig, seed: int) -> dict[str, np.ndarray]:
    """Fresh weights as Spleeter's layers start: He-uniform kernels (``he_uniform``), zero biases,
    identity batch norm."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in variable_shapes(config).items():
        kind = name.rsplit("/", 1)[1]
        if kind == "kernel":
            value = he_uniform(shape, rng)
        elif kind in ("gamma", "moving_variance"):
            value = np.ones(shape)
        else:  # bias, beta, moving_mean
            value = np.zeros(shape)
        weights[name] = value.astype(np.float32)
    return weights


def _optimizer(params: TrainingParams):
    import keras

    # TF1's defaults, which Spleeter's optimizers had (Keras' epsilon is 1e-7).
    if params.optimizer == "Adadelta":
        return keras.optimizers.Adadelta(learning_rate=0.001, rho=0.95, epsilon=1e-8)
    if params.optimizer == "SGD":
        return keras.optimizers.SGD(learning_rate=params.learning_rate)
    return keras.optimizers.Adam(learning_rate=params.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


class Trainer:
    """A network, its optimizer and its step count; ``step`` trains on one batch."""

    def __init__(self, config: SeparationConfig, weights: dict[str, np.ndarray], params: TrainingParams,
                 global_step: int = 0, precision: str = DEFAULT_PRECISION):
        self.config = config
        self.params = params
        self.global_step = global_step
        # In bf16 the convolutions, forward and backward, take bfloat16 operands cast from float32 variables:
        # the optimizer updates, and the checkpoint keeps, float32 weights that either precision then runs.
        self.network = SeparationNetwork(config, weights, precision, training=True)
        names = [n for n in variable_shapes(config) if n.rsplit("/", 1)[1] in TRAINABLE]
        self.trainable = [self.network.weights[n] for n in names]
        self.optimizer = _optimizer(params)
        # Its slots made now, eagerly: made while the step is traced, they take twice as long.
        self.optimizer.build(self.trainable)
        self.loss_fn = LOSSES[params.loss_type]
        spec = [config.T, config.F, config.n_channels]
        self._step = tf.function(self._train_step, input_signature=[
            tf.TensorSpec([None, *spec], tf.float32),
            tf.TensorSpec([len(config.instruments), None, *spec], tf.float32),
        ])

    def _train_step(self, mix, targets):
        with tf.GradientTape() as tape:
            # The network's variables are created non-trainable (inference
            # never needs gradients), so the tape is told which ones to follow.
            tape.watch(self.trainable)
            loss = self.loss_fn(self.network._forward(mix), targets)
        gradients = tape.gradient(loss, self.trainable)
        # The batch norm after each U-Net's last encoder convolution feeds
        # nothing (the decoder starts from the convolution itself, as in
        # Spleeter): no gradient, and it keeps its values, as in Spleeter.
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, self.trainable) if g is not None])
        return loss

    def step(self, mix, targets) -> float:
        loss = float(self._step(mix, targets))
        self.global_step += 1
        return loss

    def loss(self, mix, targets) -> float:
        """The loss on a batch without training (no variable changes)."""
        return float(self.loss_fn(self.network._forward(mix), targets))

    def weights(self) -> dict[str, np.ndarray]:
        return {name: variable.numpy() for name, variable in self.network.weights.items()}

    def fit(self, batches: Iterable, steps: int, on_checkpoint: Callable[[int], None] | None = None,
            checkpoint_every: int | None = None) -> list[float]:
        """Train for ``steps`` batches of ``(mix, targets)``; returns every step's loss.

        ``on_checkpoint(global_step)`` runs every ``checkpoint_every`` steps; a
        progress bar shows when stderr is a terminal.
        """
        from tqdm import tqdm

        history: list[float] = []
        iterator = iter(batches)
        with tqdm(total=steps, unit="step", desc="training", disable=None, file=sys.stderr) as bar:
            for _ in range(steps):
                try:
                    mix, targets = next(iterator)
                except StopIteration:
                    break
                history.append(self.step(mix, targets))
                recent = history[-20:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
                bar.update()
                if on_checkpoint and checkpoint_every and self.global_step % checkpoint_every == 0:
                    on_checkpoint(self.global_step)
        return history


def batches(files: list[str], config: SeparationConfig, batch_size: int, seed: int,
            keep: Callable | None = None, shuffle_buffer: int = 256) -> tf.data.Dataset:
    """Endless shuffled batches ``(mix [B,T,F,2], targets [n,B,T,F,2])`` from training records.

    ``keep(example) -> bool tensor`` leaves crops out (the silent ones).
    """
    from models import examples

    parse = examples.parser(config)
    instruments = list(config.instruments)
    dataset = tf.data.Dataset.from_tensor_slices(sorted(files)).shuffle(len(files), seed=seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if keep is not None:
        dataset = dataset.filter(keep)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda ex: (ex[examples.MIX], tf.stack([ex[name] for name in instruments])))
    return dataset.prefetch(2)
