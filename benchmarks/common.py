"""Shared by the benchmarks: synthetic catalogue tracks and whole-process measurements."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ffmpeg_process import ffmpeg_binary  # noqa: E402
from pipeline import demo  # noqa: E402

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")


def track(folder: Path, name: str, seconds: float, seed: int) -> Path:
    """A synthetic track of any length: one minute of music, looped by ffmpeg into a FLAC file."""
    path = folder / f"{name}.flac"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    unit = demo.make_track(folder / f".{name}-unit.wav", seconds=min(60.0, seconds), seed=seed)
    loops = max(0, int(-(-seconds // 60)) - 1)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(unit),
                    "-t", f"{seconds}", "-c:a", "flac", str(path)], check=True)
    unit.unlink()
    return path


@dataclass
class Measure:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    cpu_s: float = 0.0  # user + system, the command's and every process it waited for


def measure(command: list[str], env: dict | None = None) -> Measure:
    """Wall time, CPU time and the largest resident set of the command or any process it waited for."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    stderr = process.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"command failed ({code}): {' '.join(command)}\n{stderr[-2000:]}", file=sys.stderr)
    return Measure(wall, usage.ru_maxrss / 1024, code, usage.ru_utime + usage.ru_stime)


def reference_spleeter() -> Path:
    venv = subprocess.run([str(REPO / "scripts" / "reference-venv")], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    return Path(venv) / "bin" / "spleeter"


def model_path_for_spleeter(cache: Path) -> dict:
    """Spleeter finds the 2stems checkpoint in beamsplitter's cache through MODEL_PATH."""
    return {"MODEL_PATH": str(cache)}


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# The CPU features that decide TensorFlow's speed: vector width, oneDNN's bf16 and int8 paths, AMX.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> str:
    """Cores, CPU model and its speed-relevant flags (as lscpu reports them), memory."""
    info = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        pass
    cpu = info.get("Model name", "").strip() or next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = set(info.get("Flags", "").split())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}; {' '.join(f for f in SPEED_FLAGS if f in flags) or 'no AVX2'}), {memory:.0f} GiB"


# --- other processes' resources, from /proc (Linux) ---------------------------------------------

def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": state, ppid, ...


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (a service's own folder, say)."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids`` and of their children that ended."""
    ticks = 0
    for pid in pids:
        if fields := _stat(pid):
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")
