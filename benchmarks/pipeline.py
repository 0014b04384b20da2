"""The catalogue job on the local runner and on Flink against `beamsplitter separate`, same tracks, one run.

Runs the commands in turn (A B C A B C ...) and prints the medians: x-realtime
for each, the pipeline's overhead in wall and CPU time, how the job scales from
one to two local worker processes (--direct_running_mode=multi_processing), and
the job on Flink: embedded (a mini cluster in the job server, SDK workers in
the job's process) and a standalone cluster with a Beam worker pool, as
infra/flink deploys it (both started once, here, on loopback). Flink's CPU time
adds its JVMs' and the worker pool's processes to the command's own; its peak
RSS is given per process.

    .venv/bin/python benchmarks/pipeline.py [--tracks 8] [--seconds 180] [--repeat 3] [--no-flink]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from common import BEAMSPLITTER, REPO, Measure, cpu_seconds, machine, measure, processes_mentioning, table, track

from tests import services


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each track")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command, in turn; medians are shown")
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    parser.add_argument("--no-flink", action="store_true", help="leave out the Flink runs")
    parser.add_argument("--fan-out", default="tracks", help="--fan_out of the Flink runs (default: %(default)s)")
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
    with contextlib.ExitStack() as services_up:
        if not args.no_flink:
            flink = start_flink(services_up)
            for name, (options, processes) in flink.items():
                commands[name] = job + [f"--fan_out={args.fan_out}", *options]
                results[name] = []
        for _ in range(args.repeat):
            for name, command in commands.items():
                shutil.rmtree(out, ignore_errors=True)  # every run starts from nothing done
                if name in flink_names(args):
                    results[name].append(measure_with(command, flink[name][1]))
                else:
                    results[name].append(measure(command))
        peaks = {name: {p: max(map(services.vm_hwm_bytes, pids()), default=0) for p, pids in flink[name][1].items()}
                 for name in flink_names(args)}

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
    for name in flink_names(args):
        print(f"{name}: {median(local, 'wall_s') / median(name, 'wall_s'):.0%} of the local runner's throughput; "
              "peak RSS per process: " + ", ".join(f"{p} {b / 2**30:.2f} GB" for p, b in peaks[name].items()))


EMBEDDED, CLUSTER = "beamsplitter run, embedded Flink", "beamsplitter run, Flink cluster + worker pool"


def flink_names(args) -> tuple[str, ...]:
    return () if args.no_flink else (EMBEDDED, CLUSTER)


def start_flink(stack: contextlib.ExitStack) -> dict:
    """Flink runs by name: (Beam options, {process name: function giving its pids}), services started on ``stack``."""
    import subprocess

    jar = subprocess.run([str(REPO / "scripts" / "fetch-flink-jobserver")], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    embedded = stack.enter_context(services.flink_job_server(jar, master="[local]"))
    cluster = stack.enter_context(services.flink_cluster(jar))
    server = stack.enter_context(services.flink_job_server(jar, cluster.master))
    pool = stack.enter_context(services.worker_pool(cwd=os.getcwd()))
    def jvm(folder):  # a service's JVMs name its folder in their -Djava.io.tmpdir
        return lambda: processes_mentioning(str(folder))

    return {
        EMBEDDED: (embedded.pipeline_options(parallelism=2), {"job server (Flink inside)": jvm(embedded.log.parent)}),
        CLUSTER: (server.pipeline_options(parallelism=2, worker_pool=pool),
                  {"JobManager + TaskManager": jvm(cluster.workdir), "job server": jvm(server.log.parent),
                   "SDK workers": lambda: services.descendants(pool.pid)}),
    }


def measure_with(command: list[str], processes: dict) -> Measure:
    """``measure(command)``, its CPU time plus what the services' processes spent meanwhile."""
    before = sum(cpu_seconds(pids()) for pids in processes.values())
    result = measure(command)
    result.cpu_s += sum(cpu_seconds(pids()) for pids in processes.values()) - before
    return result


if __name__ == "__main__":
    main()
