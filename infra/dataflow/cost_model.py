#!/usr/bin/env python3
"""The cost model of infra/dataflow/COSTS.md: from x-realtime figures to worker-hours and cost.

    python3 infra/dataflow/cost_model.py --tracks 1000000 --mean-seconds 210 --stems 4 \\
        --gpu-xrt 100 --cpu-xrt 50 --vcpu-price 0.056 --mem-price 0.003557 --gpu-price 0.56 \\
        --shuffle-price 0.011 --storage-price 0.02

Every input is a named option (COSTS.md says where each comes from); prints a Markdown table,
or JSON with --json. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, dataclass, fields

CHUNK_OVERLAP = 527_360 / 524_288  # samples a model chunk reads / samples it advances (3072 overlap)


@dataclass(frozen=True)
class Inputs:
    tracks: int  # N
    mean_seconds: float  # L, mean track duration
    stems: int  # S
    gpu_xrt: float  # X_gpu: audio seconds separated per second by one GPU worker (inference step)
    cpu_xrt: float  # X_cpu: audio seconds per second per vCPU of the CPU steps (decode, reassembly, encode)
    vcpu_price: float  # P_vcpu, $ per vCPU-hour
    mem_price: float  # P_mem, $ per GB-hour
    gpu_price: float  # P_gpu, $ per GPU-hour
    shuffle_price: float  # P_shuffle, $ per GB of shuffle data processed
    storage_price: float = 0.0  # P_store, $ per GB-month of stems kept
    gpu_worker_vcpus: int = 8  # g2-standard-8
    gpu_worker_gb: float = 32.0
    gpus_per_worker: int = 1
    cpu_worker_vcpus: int = 8  # n2-standard-8
    cpu_worker_gb: float = 32.0
    gpu_workers: int = 50  # for the wall-clock estimate
    sample_rate: int = 44_100
    channels: int = 2
    bytes_per_sample: int = 4  # chunks cross the shuffle as float32
    stem_kbps: float = 1411.2  # 16-bit 44.1 kHz stereo WAV; FLAC about 900, mp3 -b 192k: 192


def estimate(i: Inputs) -> dict[str, float]:
    audio_s = i.tracks * i.mean_seconds
    gpu_worker_h = audio_s / i.gpu_xrt / 3600
    cpu_worker_h = audio_s / (i.cpu_xrt * i.cpu_worker_vcpus) / 3600
    gpu_worker_rate = (i.gpus_per_worker * i.gpu_price + i.gpu_worker_vcpus * i.vcpu_price
                       + i.gpu_worker_gb * i.mem_price)
    cpu_worker_rate = i.cpu_worker_vcpus * i.vcpu_price + i.cpu_worker_gb * i.mem_price
    bytes_per_audio_s = i.sample_rate * i.channels * i.bytes_per_sample * CHUNK_OVERLAP
    shuffle_gb = audio_s * bytes_per_audio_s * (1 + i.stems) / 1e9  # chunks in, S stems back
    stems_gb = audio_s * i.stems * i.stem_kbps * 1000 / 8 / 1e9
    gpu_cost = gpu_worker_h * gpu_worker_rate
    cpu_cost = cpu_worker_h * cpu_worker_rate
    shuffle_cost = shuffle_gb * i.shuffle_price
    total = gpu_cost + cpu_cost + shuffle_cost
    return {
        "audio_hours": audio_s / 3600,
        "gpu_hours": gpu_worker_h * i.gpus_per_worker,
        "gpu_worker_hours": gpu_worker_h,
        "cpu_worker_hours": cpu_worker_h,
        "wall_hours": gpu_worker_h / i.gpu_workers,
        "shuffle_gb": shuffle_gb,
        "gpu_cost": gpu_cost,
        "cpu_cost": cpu_cost,
        "shuffle_cost": shuffle_cost,
        "total_cost": total,
        "cost_per_million_tracks": total * 1e6 / i.tracks,
        "cost_per_audio_hour": total / (audio_s / 3600),
        "stems_tb": stems_gb / 1000,
        "storage_cost_per_month": stems_gb * i.storage_price,
    }


ROWS = (  # key, label, format
    ("audio_hours", "audio to separate (h) = N·L/3600", "{:,.0f}"),
    ("gpu_hours", "GPU-hours = N·L/(X_gpu·3600)·G", "{:,.0f}"),
    ("gpu_worker_hours", "GPU worker-hours", "{:,.0f}"),
    ("cpu_worker_hours", "CPU worker-hours = N·L/(X_cpu·V_c·3600)", "{:,.0f}"),
    ("wall_hours", "wall clock with K GPU workers (h)", "{:,.1f}"),
    ("shuffle_gb", "shuffle data (GB) = N·L·r·c·b·o·(1+S)/1e9", "{:,.0f}"),
    ("gpu_cost", "GPU workers ($)", "{:,.0f}"),
    ("cpu_cost", "CPU workers ($)", "{:,.0f}"),
    ("shuffle_cost", "Dataflow Shuffle ($)", "{:,.0f}"),
    ("total_cost", "total ($)", "{:,.0f}"),
    ("cost_per_million_tracks", "per million tracks ($)", "{:,.0f}"),
    ("cost_per_audio_hour", "per hour of audio ($)", "{:,.3f}"),
    ("stems_tb", "stems written (TB)", "{:,.1f}"),
    ("storage_cost_per_month", "keeping them, per month ($)", "{:,.0f}"),
)


def markdown(result: dict[str, float]) -> str:
    lines = ["| quantity | value |", "| --- | ---: |"]
    lines += [f"| {label} | {fmt.format(result[key])} |" for key, label, fmt in ROWS]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[Inputs, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in fields(Inputs):
        kind = int if field.type == "int" else float  # annotations are strings here
        option = "--" + field.name.replace("_", "-")
        if field.default is MISSING:
            parser.add_argument(option, type=kind, required=True)
        else:
            parser.add_argument(option, type=kind, default=field.default, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    inputs = Inputs(**args)
    if min(inputs.tracks, inputs.mean_seconds, inputs.stems, inputs.gpu_xrt, inputs.cpu_xrt) <= 0:
        parser.error("tracks, mean seconds, stems and x-realtime figures must be positive")
    return inputs, as_json


def main(argv: list[str] | None = None) -> int:
    inputs, as_json = parse(argv)
    result = estimate(inputs)
    print(json.dumps(result, indent=2) if as_json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
