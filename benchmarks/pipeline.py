"""The catalogue job on the local runner against `beamsplitter separate`, same tracks, one run.

Runs separate and run in turn (A B A B ...) and prints the medians: x-realtime for
each, the pipeline's overhead in wall and CPU time, and how the job scales from
one to two worker processes (--direct_running_mode=multi_processing).

    .venv/bin/python benchmarks/pipeline.py [--tracks 8] [--seconds 180] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from common import BEAMSPLITTER, machine, measure, table, track


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each track")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command, in turn; medians are shown")
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
    out = work / "out"
    job = [BEAMSPLITTER, "run", "--manifest", str(manifest), "--output", str(out), *common]
    commands = {
        "beamsplitter separate": [BEAMSPLITTER, "separate", *map(str, tracks), "-o", str(out), *common],
        "beamsplitter run (local runner)": job,
        "beamsplitter run, 1 worker process": job + ["--direct_running_mode=multi_processing",
                                                     "--direct_num_workers=1"],
        "beamsplitter run, 2 worker processes": job + ["--direct_running_mode=multi_processing",
                                                       "--direct_num_workers=2"],
    }
    results = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, command in commands.items():
            shutil.rmtree(out, ignore_errors=True)  # every run starts from nothing done
            results[name].append(measure(command))

    def median(name, field):
        return statistics.median(getattr(m, field) for m in results[name])

    rows = []
    for name, runs in results.items():
        failed = [m.returncode for m in runs if m.returncode != 0]
        rows.append([name, f"{median(name, 'wall_s'):.1f}", f"{audio_s / median(name, 'wall_s'):.1f}x",
                     f"{median(name, 'cpu_s'):.1f}", f"{median(name, 'peak_rss_mb') / 1024:.2f}",
                     f"exit {failed[0]}" if failed else "ok"])
    print(f"{args.model}, {args.tracks} tracks x {args.seconds:.0f} s, medians of {args.repeat} runs, on {machine()}")
    print(table(["", "wall s", "x realtime", "CPU s", "peak RSS GB (largest process)", ""], rows))
    base, local = "beamsplitter separate", "beamsplitter run (local runner)"
    print(f"\npipeline overhead against separate: {100 * (median(local, 'wall_s') / median(base, 'wall_s') - 1):.0f}% "
          f"more wall time, {100 * (median(local, 'cpu_s') / median(base, 'cpu_s') - 1):.0f}% more CPU time")
    one, two = "beamsplitter run, 1 worker process", "beamsplitter run, 2 worker processes"
    print(f"1 -> 2 worker processes: {median(one, 'wall_s') / median(two, 'wall_s'):.2f}x throughput")


if __name__ == "__main__":
    main()
