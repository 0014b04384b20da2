"""The options that several commands share, each declared once and checked once.

A command adds a group with the function here, whether its parser is
argparse's (``separate``, ``evaluate``, ``fetch``) or Beam's (``run`` and
``plan``, whose options are Beam pipeline options: see pipeline/options.py).
Each option has one documented spelling, the first one; the others are
aliases that users already type (Spleeter's ``--params_filename`` and
``--output_path``, the hyphenated ``--sample-format``...). The destination is
the same everywhere, so code reads ``args.codec`` whichever command parsed it.

``check`` validates what a command parsed before any model loads or any track
is decoded, with messages naming the documented spelling.
"""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "spleeter:2stems"


def add_option(parser, names: tuple[str, ...], aliases: tuple[str, ...] = (), **kwargs) -> None:
    """``names`` as documented in help; ``aliases`` accepted for the same value but left out of help."""
    kwargs.setdefault("dest", next(n for n in names if n.startswith("--"))[2:].replace("-", "_"))
    parser.add_argument(*names, **kwargs)
    if aliases:
        # The same default (not SUPPRESS): Beam's parsers compare a value with argparse's get_default,
        # which skips a default of None and would find the alias's.
        hidden = {k: v for k, v in kwargs.items() if k not in ("help", "metavar", "required")}
        parser.add_argument(*aliases, help=argparse.SUPPRESS, **hidden)


def add_output(parser, default: str | None = None, what: str = "output prefix: local folder, gs:// or s3://",
               required: bool = False) -> None:
    add_option(parser, ("-o", "--output"), ("--output_path",), dest="output", default=default, required=required,
               metavar="OUT", help=what + (" (default: %(default)s)" if default else ""))


def add_model(parser, precision: bool = True) -> None:
    """The model: its configuration, its weights and (where it runs) its arithmetic."""
    add_option(parser, ("-p", "--model"), ("--params_filename",), dest="model", default=DEFAULT_MODEL,
               help="model configuration: spleeter:2stems, spleeter:4stems, spleeter:5stems (each also "
                    "-16kHz), or a JSON file (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder or gs://, s3://, https:// URI (default: MODEL_PATH, the cache, then "
                             "the official release); on distributed runners give one every worker can read")
    if precision:
        add_precision(parser)


def add_precision(parser, what: str = "part of the model folder") -> None:
    """The network's arithmetic (models/precision.py)."""
    from models.precision import DEFAULT_PRECISION, PRECISIONS

    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="the network's arithmetic: fp32 (Spleeter's), or bf16 on CPUs with AMX or "
                             f"AVX512_BF16 and on GPUs; {what} (default: %(default)s)")


def add_encoding(parser) -> None:
    """How stems are written (models.encoding.EncodeOptions)."""
    from models.encoding import CODECS, SAMPLE_FORMATS

    parser.add_argument("-c", "--codec", default="wav",
                        help=f"stem codec: {', '.join(CODECS)} (default: %(default)s)")
    parser.add_argument("-b", "--bitrate", default="128k", help="bitrate of lossy codecs (default: %(default)s)")
    add_option(parser, ("--sample_format",), ("--sample-format",), dest="sample_format", default="s16",
               help=f"sample format of wav and flac stems: {', '.join(SAMPLE_FORMATS)} "
                    "(f32: wav only; default: %(default)s)")


def add_decoding(parser) -> None:
    """What a source may cost to decode (models.decoding, models.ffmpeg_process)."""
    from models.decoding import DEFAULT_MAX_DURATION
    from models.ffmpeg_process import DEFAULT_STALL_TIMEOUT

    add_option(parser, ("--stall_timeout",), ("--stall-timeout",), dest="stall_timeout", type=float,
                        default=DEFAULT_STALL_TIMEOUT, metavar="SECONDS",
                        help="a track fails when ffmpeg delivers or takes no data for this long (default: %(default)g)")
    add_option(parser, ("--max_duration",), ("--max-duration",), dest="max_duration", type=float,
                        default=DEFAULT_MAX_DURATION, metavar="SECONDS",
                        help="a track longer than this (with separate: from --offset, up to --duration) fails "
                             "without being separated; 0: no limit (default: %(default)g)")


def io_limits(values):
    """The models.ffmpeg_process.IOLimits of ``--stall_timeout`` and ``--max_duration``."""
    from models.ffmpeg_process import IOLimits

    return IOLimits(values.stall_timeout, values.max_duration)


def add_batch(parser) -> None:
    add_option(parser, ("--inference_batch_size",), ("--batch-size", "--batch_size"), dest="inference_batch_size",
               type=int, default=4,
               help="model chunks (11.9 s of audio each) per inference call, taken across tracks; with "
                    "--inference_accelerator and whole tracks also the tracks each worker process decodes "
                    "at once (default: %(default)s)")


def add_stems(parser) -> None:
    """Which stems are written (models.stems.StemSelection)."""
    parser.add_argument("--stems", default=None, metavar="NAMES",
                        help="only these instruments of the model, separated by commas (vocals,accompaniment); the "
                             "others are neither synthesized nor written; in a catalogue a track is done when it has "
                             "them all, and a run asking for more completes it (default: all)")
    add_option(parser, ("--two_stems",), ("--two-stems",), default=None, metavar="INSTRUMENT",
               help="INSTRUMENT and no_INSTRUMENT, the mix masked by every other instrument's mask summed "
                    "(Demucs' --two-stems), with any model; not with --stems")


def encode_options(values):
    """The models.encoding.EncodeOptions of ``--codec``, ``--bitrate`` and ``--sample_format``."""
    from models.encoding import EncodeOptions

    return EncodeOptions(values.codec, values.bitrate, values.sample_format)


def stem_selection(values):
    """The StemSelection that ``values`` (``--model``, ``--stems``, ``--two_stems``) asks; an InputError naming
    the option and the model's instruments for a name the model lacks."""
    from models.config import load_config
    from models.stems import StemSelection

    return StemSelection.of(load_config(values.model).instruments, values.stems, values.two_stems)


def check_span(offset: float, duration: float | None) -> None:
    """An InputError naming the option for an offset below 0 or a duration not above 0 (or not finite),
    which ffmpeg would otherwise turn into errors that blame the audio (``separate -s/-d``)."""
    import math

    from models.errors import InputError

    if not (math.isfinite(offset) and offset >= 0):
        raise InputError(f"--offset {offset:g}: give the start in seconds, 0 or more")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise InputError(f"--duration {duration:g}: give the seconds to separate, above 0")


def check(values: argparse.Namespace, local: bool = True):
    """Validates the shared options that ``values`` holds; returns the EncodeOptions if it holds them.

    ``local``: the model runs in this process, so its CPU must be able to run
    the precision asked (distributed workers check their own as they load it).
    """
    from models.decoding import check_max_duration
    from models.errors import InputError
    from models.ffmpeg_process import check_stall_timeout
    from models.precision import check_precision

    if hasattr(values, "stall_timeout"):
        check_stall_timeout(values.stall_timeout, "--stall_timeout")
        check_max_duration(values.max_duration, "--max_duration")
    if getattr(values, "inference_batch_size", 1) < 1:
        raise InputError(f"--inference_batch_size {values.inference_batch_size}: give at least 1")
    if hasattr(values, "stems"):
        stem_selection(values)
    if local and hasattr(values, "precision"):
        check_precision(values.precision)
    if hasattr(values, "codec"):
        return encode_options(values).check()
    return None
