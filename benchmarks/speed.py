"""beamsplitter separate against spleeter separate, same tracks, same checkpoint, one run.

Prints x-realtime for each, their ratio, and the model-only ceiling: how fast
the bare network (both U-Nets, no STFT, no I/O) runs on this machine.

    .venv/bin/python benchmarks/speed.py [--tracks 3] [--seconds 175] [--model spleeter:2stems]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BEAMSPLITTER, machine, measure, reference_spleeter, table, track


def model_ceiling(model: str, batch_size: int, seconds: float = 20.0) -> float:
    """x-realtime of the network alone on random magnitudes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from models.provider import load_separator

    separator = load_separator(model)
    config = separator.config
    magnitudes = np.random.default_rng(0).random((batch_size, config.T, config.F, 2)).astype(np.float32)
    separator.estimate(magnitudes)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        separator.estimate(magnitudes)
        done += batch_size
    chunks_per_s = done / (time.perf_counter() - started)
    return chunks_per_s, chunks_per_s * config.T * config.frame_step / config.sample_rate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=175.0)
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    args = parser.parse_args()

    from models.config import load_config
    from models.provider import resolve_checkpoint

    checkpoint = resolve_checkpoint(load_config(args.model))
    work = Path(args.workdir)
    tracks = [str(track(work / "tracks", f"t{args.seconds:.0f}-{i}", args.seconds, seed=i))
              for i in range(args.tracks)]
    audio_s = args.tracks * args.seconds
    spleeter = reference_spleeter()
    runs = {
        "beamsplitter separate": ([BEAMSPLITTER, "separate", *tracks, "-o", str(work / "bs"), "-p", args.model,
                                   "--checkpoint", str(checkpoint), "--batch-size", str(args.batch_size)], {}),
        "spleeter separate (2.4.2)": ([str(spleeter), "separate", *tracks, "-o", str(work / "sp"), "-p",
                                       args.model, "-d", str(args.seconds + 1)],
                                      {"MODEL_PATH": str(checkpoint.parent)}),
    }
    rows, speeds = [], {}
    for name, (command, env) in runs.items():
        result = measure(command, env)
        speeds[name] = audio_s / result.wall_s
        rows.append([name, f"{result.wall_s:.1f}", f"{speeds[name]:.1f}x", f"{result.peak_rss_mb / 1024:.2f}"])
    chunks_per_s, ceiling = model_ceiling(args.model, args.batch_size)
    rows.append([f"model only ({chunks_per_s:.2f} chunks/s, batch {args.batch_size})", "", f"{ceiling:.1f}x", ""])
    print(f"{args.model}, {args.tracks} tracks x {args.seconds:.0f} s, on {machine()}")
    print(table(["", "wall s", "x realtime", "peak RSS GB"], rows))
    names = list(speeds)
    print(f"\nbeamsplitter / spleeter throughput: {speeds[names[0]] / speeds[names[1]]:.2f}x")



if __name__ == "__main__":
    main()
