"""The catalogue job on the local runner against `beamsplitter separate`, same tracks, one run.

Prints x-realtime for each, the pipeline's overhead, and how the job scales
from one to two worker processes (--direct_running_mode=multi_processing).

    .venv/bin/python benchmarks/pipeline.py [--tracks 6] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from common import BEAMSPLITTER, machine, measure, table, track


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    args = parser.parse_args()

    from models.config import load_config
    from models.provider import resolve_checkpoint

    checkpoint = str(resolve_checkpoint(load_config(args.model)))
    work = Path(args.workdir)
    tracks = [track(work / "tracks", f"p{args.seconds:.0f}-{i}", args.seconds, seed=20 + i) for i in range(args.tracks)]
    manifest = work / "pipeline-manifest.csv"
    manifest.write_text("track_id,uri\n" + "".join(f"{t.stem},{t}\n" for t in tracks))
    audio_s = args.tracks * args.seconds
    common = ["-p", args.model, "--checkpoint", checkpoint]
    job = [BEAMSPLITTER, "run", "--manifest", str(manifest), *common]
    runs = {
        "beamsplitter separate": [BEAMSPLITTER, "separate", *map(str, tracks), "-o", str(work / "sep"), *common],
        "beamsplitter run (local runner)": job + ["--output", str(work / "run1")],
        "beamsplitter run, 1 worker process": job + ["--output", str(work / "run2"),
                                                      "--direct_running_mode=multi_processing",
                                                      "--direct_num_workers=1"],
        "beamsplitter run, 2 worker processes": job + ["--output", str(work / "run3"),
                                                        "--direct_running_mode=multi_processing",
                                                        "--direct_num_workers=2"],
    }
    rows, speed = [], {}
    for name, command in runs.items():
        for folder in ("sep", "run1", "run2", "run3"):
            shutil.rmtree(work / folder, ignore_errors=True)
        result = measure(command)
        speed[name] = audio_s / result.wall_s
        rows.append([name, f"{result.wall_s:.1f}", f"{speed[name]:.1f}x", f"{result.peak_rss_mb / 1024:.2f}",
                     "ok" if result.returncode == 0 else f"exit {result.returncode}"])
    print(f"{args.model}, {args.tracks} tracks x {args.seconds:.0f} s, on {machine()}")
    print(table(["", "wall s", "x realtime", "peak RSS GB (largest process)", ""], rows))
    base = speed["beamsplitter separate"]
    local = speed["beamsplitter run (local runner)"]
    print(f"\npipeline overhead against separate: {100 * (base / local - 1):.0f}% more wall time")
    one, two = speed["beamsplitter run, 1 worker process"], speed["beamsplitter run, 2 worker processes"]
    print(f"1 -> 2 worker processes: {two / one:.2f}x throughput")


if __name__ == "__main__":
    main()
