"""Model configurations: Spleeter's JSON parameter files, embedded or on disk."""

from __future__ import annotations

import dataclasses
import json
import posixpath
from pathlib import Path

from models.errors import ConfigError
from models.uris import normalize

CONFIG_DIR = Path(__file__).parent / "configs"
EMBEDDED_PREFIX = "spleeter:"
MASK_EXTENSIONS = ("zeros", "average")
MODEL_TYPES = ("unet.unet", "unet.softmax_unet")


def embedded_names() -> list[str]:
    """Names accepted by ``-p``, e.g. ``spleeter:4stems-16kHz``."""
    return sorted(EMBEDDED_PREFIX + f.stem for f in CONFIG_DIR.glob("*.json"))


@dataclasses.dataclass(frozen=True)
class SeparationConfig:
    """The fields of a Spleeter parameter file that inference depends on.

    Units: ``sample_rate`` in Hz; ``frame_length`` and ``frame_step`` in samples;
    ``T`` in STFT frames per model chunk; ``F`` in frequency bins seen by the
    network (bins above ``F`` get the ``mask_extension`` treatment).
    """

    name: str
    instruments: tuple[str, ...]
    model_dir: str
    sample_rate: int = 44100
    frame_length: int = 4096
    frame_step: int = 1024
    T: int = 512
    F: int = 1024
    n_channels: int = 2
    separation_exponent: float = 2.0
    mask_extension: str = "zeros"
    model_type: str = "unet.unet"
    conv_activation: str = "LeakyReLU"
    deconv_activation: str = "ReLU"
    conv_n_filters: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def n_bins(self) -> int:
        """Bins of the full one-sided STFT (2049 for 4096-sample frames)."""
        return self.frame_length // 2 + 1

    @property
    def softmax(self) -> bool:
        return self.model_type == "unet.softmax_unet"

    @classmethod
    def from_dict(cls, params: dict, name: str) -> "SeparationConfig":
        try:
            model = params.get("model", {"type": "unet.unet", "params": {}})
            model_params = model.get("params", {}) or {}
            config = cls(
                name=name,
                instruments=tuple(params["instrument_list"]),
                model_dir=str(params.get("model_dir", name)),
                sample_rate=int(params["sample_rate"]),
                frame_length=int(params["frame_length"]),
                frame_step=int(params["frame_step"]),
                T=int(params["T"]),
                F=int(params["F"]),
                n_channels=int(params.get("n_channels", 2)),
                separation_exponent=float(params.get("separation_exponent", 2)),
                mask_extension=str(params.get("mask_extension", "zeros")),
                model_type=str(model.get("type", "unet.unet")),
                conv_activation=str(model_params.get("conv_activation", "LeakyReLU")),
                deconv_activation=str(model_params.get("deconv_activation", "ReLU")),
                conv_n_filters=tuple(model_params.get("conv_n_filters", (16, 32, 64, 128, 256, 512))),
                raw=dict(params),
            )
        except KeyError as exc:
            raise ConfigError(f"model configuration {name}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"model configuration {name}: {exc}") from None
        config._validate()
        return config

    def _validate(self) -> None:
        problems = []
        if not self.instruments or len(set(self.instruments)) != len(self.instruments):
            problems.append("instrument_list must name distinct instruments")
        if self.mask_extension not in MASK_EXTENSIONS:
            problems.append(f"mask_extension must be one of {MASK_EXTENSIONS}")
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model.type must be one of {MODEL_TYPES}")
        if self.n_channels != 2:
            problems.append("n_channels must be 2")
        if not 0 < self.F <= self.n_bins:
            problems.append(f"F must be in 1..{self.n_bins}")
        # Six stride-2 convolutions: both chunk axes must divide by 64 to come back to size.
        if self.T % 64 or self.F % 64:
            problems.append("T and F must be multiples of 64")
        if self.frame_length % self.frame_step:
            problems.append("frame_length must be a multiple of frame_step")
        if problems:
            raise ConfigError(f"model configuration {self.name}: " + "; ".join(problems))


def load_config(descriptor: str) -> SeparationConfig:
    """Load ``spleeter:<name>`` from the embedded set, or a JSON file path."""
    if descriptor.startswith(EMBEDDED_PREFIX):
        short = descriptor[len(EMBEDDED_PREFIX):]
        resource = CONFIG_DIR / f"{short}.json"
        if not resource.is_file():
            raise ConfigError(
                f"unknown model configuration {descriptor!r}; embedded ones are: {', '.join(embedded_names())}"
            )
        return SeparationConfig.from_dict(json.loads(resource.read_text()), descriptor)
    path = Path(normalize(descriptor))
    if not path.is_file():
        raise ConfigError(
            f"model configuration {descriptor!r} is neither an embedded name ({', '.join(embedded_names())}) nor a JSON file"
        )
    try:
        params = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model configuration {descriptor}: cannot read JSON ({exc})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"model configuration {descriptor}: expected a JSON object")
    return SeparationConfig.from_dict(params, _name(path, str(params.get("model_dir") or "")))


def _name(path: Path, model_dir: str) -> str:
    """A trained model's name: its folder's, which its absolute ``model_dir`` names (``train`` writes it so);
    a model folder's ``params.json`` otherwise takes the name of the folder it is in; any other file its own."""
    if posixpath.isabs(model_dir) and posixpath.basename(model_dir.rstrip("/")):
        return posixpath.basename(model_dir.rstrip("/"))
    return path.parent.name if path.stem == "params" and path.parent.name else path.stem
