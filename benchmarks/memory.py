"""Peak memory of beamsplitter separate on long inputs (5, 30 and 60 minutes by default).

    .venv/bin/python benchmarks/memory.py [--minutes 5 30 60] [--model spleeter:2stems]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import BEAMSPLITTER, machine, measure, table, track


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 30, 60])
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    args = parser.parse_args()

    from models.config import load_config
    from models.provider import resolve_checkpoint

    checkpoint = resolve_checkpoint(load_config(args.model))
    work = Path(args.workdir)
    rows = []
    for minutes in args.minutes:
        source = track(work / "long", f"m{minutes:g}", minutes * 60, seed=7)
        result = measure([BEAMSPLITTER, "separate", str(source), "-o", str(work / "mem"), "-p", args.model,
                          "--checkpoint", str(checkpoint), "-c", "flac"])
        rows.append([f"{minutes:g} min", f"{result.peak_rss_mb / 1024:.2f}", f"{result.wall_s:.0f}",
                     f"{minutes * 60 / result.wall_s:.1f}x", "ok" if result.returncode == 0 else "failed"])
    print(f"beamsplitter separate {args.model}, one track, on {machine()}")
    print(table(["input", "peak RSS GB", "wall s", "x realtime", ""], rows))


if __name__ == "__main__":
    main()
