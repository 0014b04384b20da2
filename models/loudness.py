"""A stem's loudness as the music industry measures it: ffmpeg's ``ebur128`` filter, in the encoder.

ITU-R BS.1770-4 / EBU R128: integrated loudness (LUFS, gated: 400 ms blocks
below -70 LUFS, then those 10 LU below the ungated level, are left out),
loudness range (LU, EBU Tech 3342) and true peak (dBTP, 4x oversampled).

The encoder (models/encoding.py) sends the samples it encodes through the
filter too, as a second output of the same ffmpeg (``-f null``): no second
decode, and the stem's own output and bytes are untouched. The filter reports
its summary on stderr when ffmpeg ends, read here.

Why ffmpeg's filter rather than pyloudnorm: it gives all three figures (pyloudnorm
only integrated loudness: no loudness range, no true peak), it is exact against
the ``ebur128`` the figures are checked with, and it is as quick. Measured on a
4-minute stereo 44.1 kHz stem (two busy cores): ebur128 took 0.6 s beyond
decoding without the true peak and 1.5 s with it (4x oversampling), where
pyloudnorm 0.2's integrated loudness alone took 0.9-1.3 s on the same samples;
inside the encoder, 16-bit WAV took 0.5 s without the filter, 1.3-3.3 s with it.

Silence has no loudness: when no block passes the -70 LUFS gate ebur128 says
-70.0 LUFS, and a stem of zeros has a true peak of -inf; both are given as None,
as is the loudness range of a silent stem.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# peak=true: the true peak too; framelog=verbose: its per-100 ms lines stay below the info level
# at which its summary is read.
FILTER = "ebur128=peak=true:framelog=verbose"
# What ebur128 reports for integrated loudness when every block fell below the absolute gate.
ABSOLUTE_GATE_LUFS = -70.0

_SUMMARY = re.compile(r"ebur128\S* @ 0x[0-9a-f]+\] Summary:")
_FIGURES = {"integrated": re.compile(r"\s*I:\s+(\S+) LUFS"), "range": re.compile(r"\s*LRA:\s+(\S+) LU$"),
            "peak": re.compile(r"\s*Peak:\s+(\S+) dBFS")}


@dataclass(frozen=True)
class Loudness:
    """``integrated_lufs``, ``range_lu`` and ``true_peak_dbtp`` of one stem; None for silence."""

    integrated_lufs: float | None
    range_lu: float | None
    true_peak_dbtp: float | None

    @classmethod
    def from_summary(cls, lines: list[str]) -> "Loudness | None":
        """The figures of ebur128's summary among ffmpeg's ``lines``; None when there is none."""
        start = next((n for n, line in enumerate(lines) if _SUMMARY.search(line)), None)
        if start is None:
            return None
        found = {}
        for line in lines[start + 1:]:
            for name, pattern in _FIGURES.items():
                match = pattern.match(line)
                if match and name not in found:
                    found[name] = float(match[1])
        if len(found) < len(_FIGURES):
            return None
        silent = found["integrated"] <= ABSOLUTE_GATE_LUFS
        peak = found["peak"]
        return cls(None if silent else found["integrated"], None if silent else found["range"],
                   peak if math.isfinite(peak) else None)
