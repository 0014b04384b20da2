"""Start-up: `beamsplitter separate` on a 1-second file, and where its time goes.

Runs the command --repeat times (with ``--against DIR``, another checkout's
command in turn with this one's, A B A B ...) and prints the medians of wall
and CPU time; then, in processes of its own, the same start-up phase by phase
(the CLI's imports, TensorFlow's, the checkpoint, the network's variables, the
first chunk with its tracing, a second chunk), medians of wall and CPU seconds.
These machines are shared: compare only figures from one run.

    .venv/bin/python benchmarks/startup.py [--repeat 5] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def phases() -> dict[str, tuple[float, float]]:
    """This process's start-up, phase by phase: name -> (wall s, CPU s)."""
    marks = [("python", time.monotonic() - _process_age(), 0.0)]

    def mark(name):
        marks.append((name, time.monotonic(), time.process_time()))

    mark("python start")
    from pipeline import cli, tensorflow_quietly  # noqa: F401
    mark("import the CLI")
    tensorflow_quietly.load()
    mark("import TensorFlow")
    import numpy as np

    from models.checkpoint import checkpoint_digest, read_weights
    from models.config import load_config
    from models.provider import resolve_checkpoint
    from models.separator import Separator
    config = load_config("spleeter:2stems")
    directory = resolve_checkpoint(config)
    mark("import the model's modules")
    weights = read_weights(directory, config)
    digest = checkpoint_digest(directory)
    mark("read the checkpoint, its sha256")
    separator = Separator(config, weights, digest)
    mark("build the network")
    if hasattr(separator, "separate_chunks"):
        chunk, inputs = separator.separate_chunks, np.zeros((1, separator.geometry.span, 2), np.float32)
    else:  # a checkout from before the chunk function: its network
        chunk, inputs = separator.estimate, np.zeros((1, config.T, config.F, 2), np.float32)
    chunk(inputs)
    mark("first chunk (tracing)")
    chunk(inputs)
    mark("second chunk")
    return {name: (t - t0, c - c0) for (_, t0, c0), (name, t, c) in zip(marks, marks[1:])}


def _process_age() -> float:
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; medians are shown")
    parser.add_argument("--against", type=Path, help="another beamsplitter checkout to run `separate` from")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    parser.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)  # one child's measurement
    args = parser.parse_args()
    if args.phases:  # before importing anything else, which would count as Python's start
        # This folder's pipeline.py would shadow the package: the checkout comes from PYTHONPATH.
        sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
        print(json.dumps(phases()))
        return
    from common import BEAMSPLITTER, REPO, machine, measure, table

    from pipeline import demo

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    second = work / "one-second.wav"
    if not second.exists():
        demo.make_track(second, seconds=1.0, seed=0)
    checkouts = {"this checkout": REPO} | ({str(args.against): args.against.resolve()} if args.against else {})
    runs = {name: [] for name in checkouts}
    split = {name: [] for name in checkouts}
    for _ in range(args.repeat):
        for name, checkout in checkouts.items():
            env = {"PYTHONPATH": str(checkout)}
            runs[name].append(measure([BEAMSPLITTER, "separate", str(second), "-o", str(work / "one-out")], env))
            child = subprocess.run([sys.executable, __file__, "--phases"], capture_output=True, text=True,
                                   env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
            split[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"`beamsplitter separate` on a 1 s file, {args.repeat} runs each, on {machine()}")
    print(table(["", "wall s (median)", "CPU s (median)", "every run, wall s"],
                [[name, f"{statistics.median(r.wall_s for r in rs):.2f}",
                  f"{statistics.median(r.cpu_s for r in rs):.2f}", " ".join(f"{r.wall_s:.1f}" for r in rs)]
                 for name, rs in runs.items()]))
    for name, measured in split.items():
        print(f"\nstart-up phase by phase, {name} (medians)")
        print(table(["phase", "wall s", "CPU s"],
                    [[phase, f"{statistics.median(m[phase][0] for m in measured):.2f}",
                      f"{statistics.median(m[phase][1] for m in measured):.2f}"] for phase in measured[0]]))


if __name__ == "__main__":
    main()
