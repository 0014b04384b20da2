"""Spleeter's U-Net, one per instrument, as a ``tf.Module`` of named variables.

The variables carry the global names of Spleeter's checkpoints so that loading,
saving and SavedModel export are plain name-to-variable mappings. Inference
only: batch normalisation uses its moving statistics and dropout is identity.

Shapes: the network takes a batch of magnitude chunks ``[B, T, F, 2]`` (float32,
frames x bins x channels) and returns the instruments' spectrogram estimates
``[n_instruments, B, T, F, 2]`` (Spleeter's ``<instrument>_spectrogram``).

With ``precision="bf16"`` (models/precision.py) only the convolutions run in
bfloat16: their inputs are cast as they enter and their outputs back to float32,
so the element-wise maths between them (bias, batch norm, activations) stays
float32. Measured on a 2-core AMD EPYC with AVX512_BF16 shared with other jobs, per
chunk (STFT, network, masks, inverse STFT), CPU time at batch 4 / 8, two rounds: fp32
453 / 472 and 444 / 429 ms; these casts 312 / 289 and 334 / 298 ms; TensorFlow's oneDNN
auto mixed precision rewrite 298 / 316 and 288 / 283 ms (wall times varied too
much with the other jobs to compare); the whole network in bf16 was slower than
fp32 (TensorFlow's element-wise bf16 kernels). The rewrite is about as fast, but
it is a process-wide Grappler option: it changed the stems of an fp32 model
traced before it in the same process, so fp32 could not stay exact beside it;
these casts are the network's own.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.config import SeparationConfig

BN_EPSILON = 1e-3
LEAKY_SLOPE = 0.2
N_LEVELS = 6  # stride-2 convolutions in the encoder, transposed ones in the decoder


def _activation(name: str):
    return {
        "ReLU": tf.nn.relu,
        "ELU": tf.nn.elu,
        "LeakyReLU": lambda x: tf.nn.leaky_relu(x, alpha=LEAKY_SLOPE),
    }[name]


def _dilated_conv(x, kernel, rate: int):
    """``tf.nn.conv2d`` with ``dilations=rate`` (stride 1, SAME), differentiable on every CPU.

    TensorFlow's CPU kernels without oneDNN (its default on CPUs without
    AVX-512, AMD EPYC among them) have no gradient for dilated convolutions;
    the gradient is taken through the equivalent space-to-batch form instead.
    The forward pass, hence every stem, is the plain dilated convolution.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                z = tf.nn.atrous_conv2d(x, kernel, rate, padding="SAME")
            return tape.gradient(z, [x, kernel], output_gradients=dy)

        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME", dilations=rate), grad

    return conv(x, kernel)


def _global_name(layer: str, index: int) -> str:
    """Keras 2 names the first layer of a kind bare, then ``_1``, ``_2``..."""
    return layer if index == 0 else f"{layer}_{index}"


def variable_shapes(config: SeparationConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint variable of ``config``'s network, by global name, in creation order.

    Instrument ``k`` (in configuration order) owns ``conv2d_{7k..7k+6}`` (six encoder
    convolutions, then the output convolution), ``conv2d_transpose_{6k..6k+5}`` and
    ``batch_normalization_{12k..12k+11}`` (six after the encoder convolutions, six
    after the decoder's transposed convolutions).
    """
    filters = list(config.conv_n_filters)
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(len(config.instruments)):
        channels_in = config.n_channels
        bn_sizes = []
        for i, n in enumerate(filters):
            name = _global_name("conv2d", 7 * k + i)
            shapes[f"{name}/kernel"] = (5, 5, channels_in, n)
            shapes[f"{name}/bias"] = (n,)
            bn_sizes.append(n)
            channels_in = n
        # Decoder outputs mirror the encoder down to one channel; inputs are the
        # previous output concatenated with the matching encoder convolution.
        decoder_out = filters[-2::-1] + [1]
        decoder_in = [filters[-1]] + [2 * n for n in decoder_out[:-1]]
        for i, (n_out, n_in) in enumerate(zip(decoder_out, decoder_in)):
            name = _global_name("conv2d_transpose", 6 * k + i)
            shapes[f"{name}/kernel"] = (5, 5, n_out, n_in)
            shapes[f"{name}/bias"] = (n_out,)
            bn_sizes.append(n_out)
        name = _global_name("conv2d", 7 * k + 6)
        shapes[f"{name}/kernel"] = (4, 4, 1, config.n_channels)
        shapes[f"{name}/bias"] = (config.n_channels,)
        for i, n in enumerate(bn_sizes):
            name = _global_name("batch_normalization", 12 * k + i)
            for stat in ("gamma", "beta", "moving_mean", "moving_variance"):
                shapes[f"{name}/{stat}"] = (n,)
    return shapes


def kernel_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a convolution kernel as Keras counts them (``compute_fans``).

    The receptive field times the second-to-last axis, and times the last. Keras
    lays out a transposed convolution's kernel ``[kh, kw, out, in]`` and counts it
    the same way, so its fan-in is its *output* channels: that is how Spleeter's
    Conv2DTranspose layers drew their He-uniform weights, and what a fresh start
    here must draw to train as Spleeter's did.
    """
    receptive_field = int(np.prod(shape[:-2]))
    return receptive_field * shape[-2], receptive_field * shape[-1]


def he_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A kernel drawn as Keras' HeUniform draws one: uniform within ``sqrt(6 / fan_in)``."""
    limit = np.sqrt(6.0 / kernel_fans(shape)[0])
    return rng.uniform(-limit, limit, shape)


class SeparationNetwork(tf.Module):
    """All instruments' U-Nets of one configuration, with ``weights`` by checkpoint name (zero where not given)."""

    def __init__(self, config: SeparationConfig, weights: dict[str, np.ndarray] | None = None,
                 precision: str = "fp32", training: bool = False):
        super().__init__(name="separation_network")
        self.config, self.precision = config, precision
        weights = weights or {}
        # Made from their values, not made zero then assigned: half the time, at start-up.
        self.weights = {
            name: tf.Variable(np.asarray(weights[name], np.float32) if name in weights else tf.zeros(shape),
                              name=name.replace("/", "_"), trainable=False)
            for name, shape in variable_shapes(config).items()
        }
        # bf16 inference casts the kernels once, as constants, so that the checkpoint's variables stay as they
        # are; training casts them at every step, from the float32 variables it updates (models/training.py).
        self._bf16_kernels = {name: tf.constant(tf.cast(v, tf.bfloat16)) for name, v in self.weights.items()
                              if name.endswith("/kernel")} if precision == "bf16" and not training else None
        self._conv_activation = _activation(config.conv_activation)
        self._deconv_activation = _activation(config.deconv_activation)
        # An attribute, not a decorated method, so that the input signature can
        # carry this configuration's T and F; SavedModel export serves it too.
        # No AutoGraph: the network has no control flow for it to convert, and
        # converting it took two thirds of the tracing time.
        self.predict = tf.function(
            self._forward,
            input_signature=[tf.TensorSpec([None, config.T, config.F, config.n_channels], tf.float32)],
            reduce_retracing=True,
            autograph=False,
        )

    def __call__(self, magnitude):
        return self.predict(magnitude)

    def _batch_norm(self, x, index):
        name = _global_name("batch_normalization", index)
        w = self.weights
        scale = w[f"{name}/gamma"] * tf.math.rsqrt(w[f"{name}/moving_variance"] + BN_EPSILON)
        return (x - w[f"{name}/moving_mean"]) * scale + w[f"{name}/beta"]

    def _kernel(self, name, x):
        """The kernel ``name`` and the input ``x`` in the precision the convolutions run in."""
        if self.precision != "bf16":
            return self.weights[f"{name}/kernel"], x
        if self._bf16_kernels is None:
            return tf.cast(self.weights[f"{name}/kernel"], tf.bfloat16), tf.cast(x, tf.bfloat16)
        return self._bf16_kernels[f"{name}/kernel"], tf.cast(x, tf.bfloat16)

    def _conv(self, x, index, strides=2, dilations=1):
        name = _global_name("conv2d", index)
        kernel, x = self._kernel(name, x)
        if dilations > 1:
            y = _dilated_conv(x, kernel, dilations)
        else:
            y = tf.nn.conv2d(x, kernel, strides=strides, padding="SAME")
        return tf.cast(y, tf.float32) + self.weights[f"{name}/bias"]

    def _deconv(self, x, index):
        name = _global_name("conv2d_transpose", index)
        kernel, x = self._kernel(name, x)
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], tf.shape(kernel)[2]])
        y = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=2, padding="SAME")
        return tf.cast(y, tf.float32) + self.weights[f"{name}/bias"]

    def _unet_logits(self, x, k):
        """Instrument ``k``'s mask logits, ``[B, T, F, 2]``."""
        # The skips and the bottleneck take the convolutions' outputs *before*
        # batch norm and activation: that is how Spleeter wired its graph, and
        # the released weights were trained that way.
        skips = []
        h = x
        for i in range(N_LEVELS):
            c = self._conv(h, 7 * k + i)
            skips.append(c)
            h = self._conv_activation(self._batch_norm(c, 12 * k + i))
        h = skips[-1]
        for i in range(N_LEVELS):
            up = self._batch_norm(self._deconv_activation(self._deconv(h, 6 * k + i)), 12 * k + N_LEVELS + i)
            h = tf.concat([skips[N_LEVELS - 2 - i], up], axis=-1) if i < N_LEVELS - 1 else up
        return self._conv(h, 7 * k + 6, strides=1, dilations=2)

    def _forward(self, magnitude):
        logits = tf.stack([self._unet_logits(magnitude, k) for k in range(len(self.config.instruments))])
        if self.config.softmax:
            weights = tf.nn.softmax(logits, axis=0)
        else:
            weights = tf.sigmoid(logits)
        return weights * magnitude[tf.newaxis]
