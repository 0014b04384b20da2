"""A Flink cluster losing parts of itself while a job runs, as in docs/flink.md.

One 3-minute track and one short one, on a standalone cluster with one slot and a Beam worker pool: an SDK
worker process, then the TaskManager, is SIGKILLed while the long track is in flight. Each run ends with
exit status 4 and one line that says what was lost, and leaves no process behind; a job sent to the cluster
without its TaskManager fails, naming the missing slot; on a cluster started anew, the next run separates
exactly the tracks not done, removes what the dead runs left, and lists one metadata row per stem.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline import demo
from tests import services
from tests.pipeline.conftest import write_manifest

pytestmark = pytest.mark.slow  # a Flink cluster killed twice under a 3-minute track, and a second one

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")
TRACKS = {"long": 180.0, "short": 10.0}  # seconds
INSTRUMENTS = ("accompaniment", "vocals")


def _cluster(stack, jar: str, cwd: Path):
    cluster = stack.enter_context(services.flink_cluster(jar, slots=1))
    server = stack.enter_context(services.flink_job_server(jar, cluster.master))
    pool = stack.enter_context(services.worker_pool(cwd=cwd))
    return cluster, server.pipeline_options(parallelism=1, worker_pool=pool), pool


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, pgrp...); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _live(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _left_behind(group: int, mentioning: str, also: list[int]) -> list[str]:
    """Live processes of the process group ``group``, mentioning ``mentioning`` in their command line, or in
    ``also``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _live(pid := int(entry.name)) and pid != os.getpid():
            fields = _stat(pid) or ["Z", "0", "0"]
            if int(fields[2]) == group or mentioning in _cmdline(pid) or pid in also:
                found.append(f"{pid}: {_cmdline(pid)[:200]}")
    return found


def _eventually(check, seconds: float = 120.0):
    """``check()``'s value once it is empty or false, or its last value after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (value := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def _run(manifest: Path, out: Path, checkpoint, options: list[str]) -> subprocess.Popen:
    return subprocess.Popen([BEAMSPLITTER, "run", "--manifest", str(manifest), "--output", str(out),
                             "--checkpoint", str(checkpoint), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_mid_track(run: subprocess.Popen, out: Path, pool: services.WorkerPool, victim: str,
                    cluster: services.FlinkCluster) -> list[int]:
    """Once the long track's stems are being written, SIGKILL the SDK worker separating it, or the
    TaskManager; the processes that must end with it (that SDK worker, or every SDK worker)."""
    while run.poll() is None:
        workers = [pid for pid in services.descendants(pool.pid) if services.SDK_WORKER_BOOT in _cmdline(pid) and _live(pid)]
        separating = [pid for pid in workers
                      if any("long.wav" in _cmdline(child) for child in services.descendants(pid))]
        if separating and list(out.glob("stems/*/long/.*.part")):
            os.kill(separating[0] if victim == "sdk_worker" else cluster.taskmanager_pid, signal.SIGKILL)
            return separating[:1] if victim == "sdk_worker" else workers
        time.sleep(0.2)
    pytest.fail(f"the run ended (exit {run.returncode}) before the long track was in flight:\n"
                f"{run.stderr.read()[-3000:]}")


def _failed_job(run: subprocess.Popen, lost: str) -> str:
    """The run ended with exit status 4, and its last line, the only error, says what was lost; that line."""
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 4, stdout + stderr[-3000:]
    run_id = re.match(r"run (\S+): ", stdout).group(1)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.splitlines()[-1]], stderr[-3000:]
    assert re.fullmatch(rf"error: run {run_id}: the runner failed the job: {re.escape(lost)} \(.+\); what it wrote "
                        r"stays, and the next run completes the tracks not done", errors[0]), errors[0]
    assert "Traceback" not in stderr
    return errors[0]


def test_lost_sdk_worker_and_taskmanager_fail_the_job_in_one_line_and_the_next_run_completes(
        flink_jar, checkpoint_2stems, tmp_path):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for track_id, seconds in TRACKS.items():
        demo.make_track(folder / f"{track_id}.wav", seconds=seconds, seed=len(track_id))
    manifest = write_manifest(folder / "m.csv", [(t, f"{t}.wav", "a") for t in TRACKS])
    out = tmp_path / "out"
    with contextlib.ExitStack() as stack:
        cluster, options, pool = _cluster(stack, flink_jar, tmp_path)
        for victim, lost in (("sdk_worker", "an SDK worker process died"),
                             ("taskmanager", "the Flink TaskManager was lost")):
            run = _run(manifest, out, checkpoint_2stems, options)
            dying = _kill_mid_track(run, out, pool, victim, cluster)
            _failed_job(run, lost)
            # Nothing of the run is left: its own processes, the ffmpegs decoding and encoding its tracks,
            # the SDK worker killed and, without their TaskManager, every SDK worker.
            assert _eventually(lambda: _left_behind(run.pid, str(tmp_path), dying)) == []
        # A job sent to the cluster without its TaskManager fails once its slot request times out, which
        # the local cluster makes 30 s (Flink's 5 minutes left a job silent that long).
        _eventually(lambda: cluster.overview()["taskmanagers"], 120)
        error = _failed_job(_run(manifest, out, checkpoint_2stems, options),
                            "no free task slot on the Flink cluster (is its TaskManager running?)")
        assert f"Timeout has occurred: {services.SLOT_REQUEST_TIMEOUT_MS} ms" in error
    done = {p.parent.name for p in out.glob("stems/*/*/_SUCCESS.json")}
    assert "long" not in done
    # Whether a killed run left a temporary file of its metadata depends on whether a track ended before the
    # kill (the short one, in whichever run did it); one such as a run killed then leaves it:
    dead = out / "failures" / ".temp-run-20240101T000000Z-dead00" / "8419795282937904730_d4ad2766"
    dead.parent.mkdir(parents=True, exist_ok=True)
    dead.write_bytes(b"PAR1 an uncommitted shard")

    with contextlib.ExitStack() as stack:
        _, options, _ = _cluster(stack, flink_jar, tmp_path)
        rerun = _run(manifest, out, checkpoint_2stems, options)
        stdout, stderr = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, stderr[-3000:]
    assert f"{len(TRACKS) - len(done)} tracks done, {len(done)} skipped, 0 failed" in stdout
    assert {p.parent.name for p in out.glob("stems/*/*/_SUCCESS.json")} == set(TRACKS)
    rows = pd.concat(pd.read_parquet(p) for p in out.glob("metadata/*/run-*.parquet"))
    assert sorted(zip(rows.track_id, rows.instrument)) == [(t, i) for t in sorted(TRACKS) for i in INSTRUMENTS]
    assert not list(out.rglob(".temp-*")) and not list(out.rglob("*.part"))
