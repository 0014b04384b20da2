"""Peak memory on long inputs (5, 30 and 60 minutes by default): `beamsplitter separate`, or a Flink SDK worker.

    .venv/bin/python benchmarks/memory.py [--minutes 5 30 60] [--model spleeter:2stems]
    .venv/bin/python benchmarks/memory.py --flink [--fan-out tracks|chunks] --minutes 60 --model spleeter:4stems --random-weights

With --flink, each track is a one-track catalogue run by `beamsplitter run` on a
standalone Flink cluster with a Beam worker pool (as infra/flink deploys it,
started here on loopback), and the figure is the largest peak RSS of the SDK
worker processes, which decode, separate and write. --random-weights writes a
checkpoint of random weights for the model (memory does not depend on their
values; no 4/5-stem release weights are needed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from common import BEAMSPLITTER, REPO, machine, measure, table, track


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 30, 60])
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--random-weights", action="store_true", help="a random checkpoint of the model's shape")
    parser.add_argument("--flink", action="store_true", help="the catalogue job's SDK workers on a Flink cluster")
    parser.add_argument("--fan-out", default="tracks", help="--fan_out of the Flink runs (default: %(default)s)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    args = parser.parse_args()

    from models.config import load_config
    from models.provider import resolve_checkpoint

    config = load_config(args.model)
    work = Path(args.workdir)
    if args.random_weights:
        from models.checkpoint import random_weights, write_checkpoint

        checkpoint = work / "random" / config.model_dir
        write_checkpoint(checkpoint, random_weights(config, seed=1))
    else:
        checkpoint = resolve_checkpoint(config)
    common = ["-p", args.model, "--checkpoint", str(checkpoint), "-c", "flac"]
    rows = []
    with contextlib.ExitStack() as stack:
        cluster = start_cluster(stack) if args.flink else None
        for minutes in args.minutes:
            source = track(work / "long", f"m{minutes:g}", minutes * 60, seed=7)
            if cluster is None:
                result = measure([BEAMSPLITTER, "separate", str(source), "-o", str(work / "mem"), *common])
                peak = result.peak_rss_mb * 2**20
            else:
                result, peak = run_on_flink(cluster, source, work, common + [f"--fan_out={args.fan_out}"])
            rows.append([f"{minutes:g} min", f"{peak / 2**30:.2f}", f"{result.wall_s:.0f}",
                         f"{minutes * 60 / result.wall_s:.1f}x", "ok" if result.returncode == 0 else "failed"])
    what = (f"beamsplitter run on a Flink cluster, --fan_out={args.fan_out}, the SDK worker processes"
            if args.flink else "beamsplitter separate")
    print(f"{what}, {args.model}, one track, on {machine()}")
    print(table(["input", "peak RSS GB", "wall s", "x realtime", ""], rows))


def start_cluster(stack: contextlib.ExitStack):
    from tests import services

    jar = subprocess.run([str(REPO / "scripts" / "fetch-flink-jobserver")], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    cluster = stack.enter_context(services.flink_cluster(jar))
    return stack.enter_context(services.flink_job_server(jar, cluster.master))


def run_on_flink(server, source: Path, work: Path, options: list[str]):
    """One track through the catalogue job; returns its measure and the SDK workers' peak RSS."""
    import shutil

    from tests import services

    manifest = work / f"{source.stem}.csv"
    manifest.write_text(f"track_id,uri\n{source.stem},{source}\n")
    out = work / "mem-flink"
    shutil.rmtree(out, ignore_errors=True)
    with services.worker_pool() as pool:  # a fresh pool: its peak is this run's
        result = measure([BEAMSPLITTER, "run", "--manifest", str(manifest), "--output", str(out), *options,
                          *server.pipeline_options(parallelism=2, worker_pool=pool)])
        return result, pool.peak_rss_bytes()


if __name__ == "__main__":
    main()
