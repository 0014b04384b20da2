"""The network's arithmetic: ``fp32`` (Spleeter's, the default) or ``bf16``.

In ``bf16`` the network's convolutions and transposed convolutions take
bfloat16 inputs and kernels (oneDNN's AVX512_BF16 or AMX kernels on a CPU);
their outputs, the batch norms, activations and masks, and the spectral
stages stay float32 (``SeparationNetwork``). The precision is part of a
model's identity in its output (``model_id``; the catalogue's model folder),
so stems of the two never mix.
"""

from __future__ import annotations

from models.errors import InputError

PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"
# CPU flags (Linux's /proc/cpuinfo) of the instructions that make bf16 convolutions fast.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
BF16_REFUSAL = ("--precision bf16 needs a CPU with AMX or AVX512_BF16 (this one has neither: it would be slower, "
                "not faster)")


def model_id(config_name: str, checkpoint_sha256: str, precision: str = DEFAULT_PRECISION) -> str:
    """Configuration, weights and precision, as recorded in output metadata; fp32's as it always was."""
    name = f"{config_name}@sha256:{checkpoint_sha256}" if checkpoint_sha256 else config_name
    return name if precision == DEFAULT_PRECISION else f"{name}+{precision}"


def bf16_refusal(cpu_flags: frozenset[str] | set[str], on_gpu: bool) -> str | None:
    """Why ``--precision bf16`` is refused on a machine with these CPU flags (None: it is not).

    Without native bf16 instructions every bf16 product is emulated: slower than fp32, and less exact.
    """
    if on_gpu or BF16_CPU_FLAGS & set(cpu_flags):
        return None
    return BF16_REFUSAL


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags, from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(word for line in f if line.startswith("flags") for word in line.split(":", 1)[1].split())
    except OSError:
        return frozenset()


def check_precision(precision: str, option: str = "--precision") -> str:
    """``precision`` when this machine can run it; an InputError naming ``option`` otherwise."""
    if precision not in PRECISIONS:
        raise InputError(f"{option} {precision}: unknown precision (choose from {', '.join(PRECISIONS)})")
    if precision == "bf16":
        flags = cpu_flags()
        # TensorFlow is asked only where the CPU cannot: listing devices loads it.
        refusal = bf16_refusal(flags, on_gpu=False) and bf16_refusal(flags, on_gpu=_gpu_visible())
        if refusal:
            raise InputError(refusal)
    return precision


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
