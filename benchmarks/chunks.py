"""Where a chunk's time goes on this machine, and `beamsplitter separate` of two checkouts side by side.

In one process, on random music-like chunks, interleaved round by round
(medians over --repeat rounds; wall and CPU milliseconds per chunk, CPU
counting every thread of the process):

* the network alone, one chunk per call and --batch-size chunks per call;
* the whole chunk path as one TensorFlow function (``Separator.separate_chunks``:
  STFT, network, masks, inverse STFT), one chunk per call and in batches;
* the same stages called one by one on the host (eager STFT, the network's own
  function, eager masks and inverse STFT).

With ``--against DIR`` (another checkout of beamsplitter, e.g. ``git archive main``
unpacked), ``beamsplitter separate`` of that checkout and of this one on the same
tracks, run in turn A B A B ..., medians of wall, x-realtime and CPU (ffmpeg's
included). These machines are shared: compare only figures from one run.

    .venv/bin/python benchmarks/chunks.py [--repeat 7] [--batch-size 4] [--against DIR --tracks 2 --seconds 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BEAMSPLITTER, REPO, machine, measure, table, track


def chunk_rounds(model: str, batch_size: int, repeat: int) -> list[list]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from models import spectral
    from models.provider import load_separator

    separator = load_separator(model)
    config = separator.config
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal((batch_size, separator.geometry.span, 2))).astype(np.float32)
    magnitudes = spectral.analyze(samples, config)[1].numpy()

    def host_stages(x):
        spectrum, magnitude = spectral.analyze(x, config)
        return spectral.synthesize(spectrum, separator.network(magnitude), config).numpy()

    cases = {
        "network, 1 chunk per call": lambda: [separator.network(m[None]).numpy() for m in magnitudes],
        f"network, {batch_size} chunks per call": lambda: separator.network(magnitudes).numpy(),
        "chunk path as one function, 1 chunk per call": lambda: [separator.chunk_function()(x[None]).numpy()
                                                                  for x in samples],
        f"chunk path as one function, {batch_size} per call": lambda: separator.chunk_function()(samples).numpy(),
        "chunk path stage by stage on the host, 1 per call": lambda: [host_stages(x[None]) for x in samples],
    }
    for case in cases.values():  # traced and warm
        case()
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for _ in range(repeat):
        for name, case in cases.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            case()
            wall[name].append((time.perf_counter() - started) * 1000 / batch_size)
            cpu[name].append((time.process_time() - cpu_started) * 1000 / batch_size)
    return [[name, f"{statistics.median(wall[name]):.0f}", f"{min(wall[name]):.0f}",
             f"{statistics.median(cpu[name]):.0f}"] for name in cases]


def separate_rounds(against: Path, tracks: list[str], audio_s: float, model: str, repeat: int,
                    work: Path) -> list[list]:
    checkouts = {f"separate, {against}": against, f"separate, {REPO} (this checkout)": REPO}
    results = {name: [] for name in checkouts}
    for _ in range(repeat):
        for name, checkout in checkouts.items():
            command = [BEAMSPLITTER, "separate", *tracks, "-o", str(work / "out"), "-p", model]
            results[name].append(measure(command, {"PYTHONPATH": str(checkout)}))
    rows = []
    for name, runs in results.items():
        wall = statistics.median(r.wall_s for r in runs)
        rows.append([name, f"{wall:.1f}", f"{audio_s / wall:.1f}x", f"{statistics.median(r.cpu_s for r in runs):.1f}",
                     " ".join(f"{r.wall_s:.1f}" for r in runs)])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds; medians are shown")
    parser.add_argument("--against", type=Path, help="another beamsplitter checkout to run `separate` from")
    parser.add_argument("--tracks", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    args = parser.parse_args()

    print(f"{args.model} on {machine()}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")
    if args.against:
        work = Path(args.workdir)
        tracks = [str(track(work / "tracks", f"c{args.seconds:.0f}-{i}", args.seconds, seed=i))
                  for i in range(args.tracks)]
        rows = separate_rounds(args.against.resolve(), tracks, args.tracks * args.seconds, args.model, args.repeat,
                               work)
        print(f"\n{args.tracks} tracks x {args.seconds:.0f} s, one call, {args.repeat} rounds")
        print(table(["", "wall s (median)", "x realtime", "CPU s (median)", "every run, wall s"], rows))
    rows = chunk_rounds(args.model, args.batch_size, args.repeat)
    print(f"\nper chunk ({args.batch_size} chunks a round, {args.repeat} rounds)")
    print(table(["", "wall ms (median)", "wall ms (best)", "CPU ms (median)"], rows))


if __name__ == "__main__":
    main()
