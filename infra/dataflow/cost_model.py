#!/usr/bin/env python3
"""The cost model of infra/dataflow/COSTS.md: from x-realtime figures to worker-hours and cost.

    python3 infra/dataflow/cost_model.py --tracks 1000000 --mean-seconds 210 --stems 4 \\
        --gpu-xrt 100 --cpu-xrt 50 --vcpu-price 0.056 --mem-price 0.003557 --gpu-price 0.56 \\
        --shuffle-price 0.011 --class-a-price 0.05 --class-b-price 0.004 --storage-price 0.02

    python3 infra/dataflow/cost_model.py --traffic --mean-seconds 210 \\
        --shuffle-price 0.011 --class-a-price 0.05 --class-b-price 0.004

Every input is a named option (COSTS.md says where each comes from); prints a Markdown table,
or JSON with --json. --fan-out says how the catalogue job spreads its work (its --fan_out):
'chunks' (the GPU shape: decoded chunks and their separated stems wait in scratch storage, only
references cross the shuffles) or 'tracks' (CPU only: only track references are shuffled).
--traffic prints, for 2, 4 and 5 stems and each way (and the designs before), the bytes shuffled,
the bytes through scratch storage and its requests per minute of audio and per track. Standard
library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, dataclass, fields

# Model chunks (models/chunking.py): Spleeter's T = 512 frames of 1024 samples, 4096-sample frames.
CHUNK_STEP = 524_288  # samples a chunk advances the track by: 11.888 s at 44.1 kHz
CHUNK_SPAN = 527_360  # samples a chunk reads (the 3072 it shares with the next one included)
CHUNK_LEAD = 4_096  # zeros Spleeter puts before a track; they are part of its first chunk
LAST_CHUNK_FILL = 0.5  # the last chunk of a track runs past its end, padded with silence: half a chunk on average
NPY_HEADER = 128  # bytes np.save puts before a chunk's samples, or its stems, in scratch storage
# Q: one reference as it crosses a shuffle, key included: a track (its Track and fingerprint, measured
# 221-249 bytes), a TrackChunk without its samples (Track, fingerprint, index and a 122-character
# scratch URI: 443-447), a StashedChunk (440-485) or a metadata row (578-597). Rounded up; the
# manifest's extra columns travel in the Track and in every row, and add to it.
REFERENCE_BYTES = 640
# Cloud Storage requests of the scratch (transforms/stash.py and transforms/catalogue/storage.py on Beam's GcsIO over
# google-cloud-storage), per chunk: two uploads (its decoded samples "in-", its stems "out-"), each one
# resumable upload, which Google bills as one Class A operation once complete; two reads (a metadata
# get and one media get each); and its two objects' removal: storage.delete_files gets each to see that it
# exists, then Beam's GCSFileSystem.delete matches each path again (an existence get and a metadata
# get) before deleting it in a batch of one (deletes are free): 3 gets an object.
SCRATCH_CLASS_A_PER_CHUNK = 2
SCRATCH_CLASS_B_PER_CHUNK = 2 * 2 + 2 * 3
# Per track, storage.delete_tree of its folder: a listing under it (objects.list, one per 1,000 objects:
# a track under about 99 minutes) and a get of the folder's own name (a match without a glob; 404).
SCRATCH_CLASS_A_PER_TRACK = 1
SCRATCH_CLASS_B_PER_TRACK = 1
# The design of commit e29a90a (decoded chunks shuffled, only the stems in scratch): one upload, a
# metadata and a media get, an existence get before the delete, per chunk; nothing per track.
DECODED_SHUFFLED_OPERATIONS = (1, 3, 0, 0)
# A batch job starts the step after a shuffle once the step before it has finished: the decoded copies
# are all in scratch before inference starts and stay there through it (T), the stems fill over it;
# reassembly, taken as long as T, drains both. Hours each GB is held on average, in units of T.
HELD_DECODED = 1.5
HELD_SEPARATED = 1.0
HOURS_PER_MONTH = 730  # Cloud Storage bills storage per GB-month pro rata
FAN_OUTS = ("chunks", "tracks")
TRAFFIC_STEMS = (2, 4, 5)


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
    class_a_price: float  # P_A, $ per 10,000 Cloud Storage Class A operations (the output bucket's class)
    class_b_price: float  # P_B, $ per 10,000 Class B operations
    storage_price: float = 0.0  # P_store, $ per GB-month of the output bucket (stems kept, scratch held)
    # D_sd: days the scratch bucket keeps deleted objects (soft delete). 0: Terraform's scratch bucket;
    # 7: Cloud Storage's default, where scratch sits in a bucket without a policy of its own.
    scratch_soft_delete_days: float = 0.0
    fan_out: str = "chunks"  # the job's --fan_out: chunks (inference alone on GPUs) or tracks (its default)
    gpu_worker_vcpus: int = 8  # g2-standard-8
    gpu_worker_gb: float = 32.0
    gpus_per_worker: int = 1
    cpu_worker_vcpus: int = 8  # n2-standard-8
    cpu_worker_gb: float = 32.0
    gpu_workers: int = 50  # for the wall-clock estimate
    sample_rate: int = 44_100
    channels: int = 2
    bytes_per_sample: int = 4  # chunks cross the shuffle, and stems wait in scratch, as float32
    stem_kbps: float = 1411.2  # 16-bit 44.1 kHz stereo WAV; FLAC about 900, mp3 -b 192k: 192


@dataclass(frozen=True)
class Traffic:
    """What one track of ``seconds`` sends through the shuffle and through scratch storage (each byte
    written, then read back once): bytes, scratch objects, Class A and Class B requests."""

    shuffled: float
    decoded: float = 0.0  # bytes of its decoded chunks in scratch
    separated: float = 0.0  # bytes of its separated chunks (stems) in scratch
    objects: float = 0.0
    class_a: float = 0.0
    class_b: float = 0.0

    @property
    def scratch(self) -> float:
        return self.decoded + self.separated

    @property
    def held(self) -> float:
        """Scratch bytes weighted by how long they stay, in units of the inference stage's wall clock."""
        return HELD_DECODED * self.decoded + HELD_SEPARATED * self.separated

    def operations_cost(self, class_a_price: float, class_b_price: float) -> float:
        return (self.class_a * class_a_price + self.class_b * class_b_price) / 10_000


def chunks_per_track(seconds: float, sample_rate: int = 44_100) -> float:
    """Model chunks of a track, on average over tracks of about that length."""
    return (seconds * sample_rate + CHUNK_LEAD) / CHUNK_STEP + LAST_CHUNK_FILL


def traffic(seconds: float, stems: int, fan_out: str, sample_rate: int = 44_100, channels: int = 2,
            bytes_per_sample: int = 4) -> Traffic:
    """What one track costs in transfer under ``fan_out``. Besides FAN_OUTS, the designs before:
    ``"decoded"`` (commit e29a90a: decoded chunks shuffled to inference, their stems through scratch) and
    ``"shuffled"`` (before --fan_out: the chunks shuffled in, their S stems shuffled back)."""
    chunk_bytes = CHUNK_SPAN * channels * bytes_per_sample
    n = chunks_per_track(seconds, sample_rate)
    listed = (1 + stems) * REFERENCE_BYTES  # its catalogue row de-duplicated, its S metadata rows to one file
    if fan_out == "tracks":  # its reference spread over the workers; all the rest stays on one worker
        return Traffic(listed + REFERENCE_BYTES)
    if fan_out == "chunks":  # each chunk's TrackChunk reference to inference, its StashedChunk to its track's group
        return Traffic(listed + n * 2 * REFERENCE_BYTES,
                       decoded=n * (chunk_bytes + NPY_HEADER), separated=n * (stems * chunk_bytes + NPY_HEADER),
                       objects=2 * n,
                       class_a=n * SCRATCH_CLASS_A_PER_CHUNK + SCRATCH_CLASS_A_PER_TRACK,
                       class_b=n * SCRATCH_CLASS_B_PER_CHUNK + SCRATCH_CLASS_B_PER_TRACK)
    if fan_out == "decoded":  # e29a90a: each chunk in with its samples; its StashedChunk to its track's group
        a_chunk, b_chunk, a_track, b_track = DECODED_SHUFFLED_OPERATIONS
        return Traffic(listed + n * (chunk_bytes + 2 * REFERENCE_BYTES),
                       separated=n * (stems * chunk_bytes + NPY_HEADER), objects=n,
                       class_a=n * a_chunk + a_track, class_b=n * b_chunk + b_track)
    if fan_out == "shuffled":  # before --fan_out: the chunks in, their S stems back
        return Traffic(listed + n * ((1 + stems) * chunk_bytes + 2 * REFERENCE_BYTES))
    raise ValueError(f"fan-out {fan_out!r}: one of {', '.join(FAN_OUTS)}, 'decoded' or 'shuffled'")


def per_minute(stems: int, fan_out: str, sample_rate: int = 44_100, channels: int = 2,
               bytes_per_sample: int = 4) -> Traffic:
    """What each further minute of a track adds (a track's references, and requests, excluded)."""
    one, two = (traffic(seconds, stems, fan_out, sample_rate, channels, bytes_per_sample) for seconds in (60, 120))
    return Traffic(*(getattr(two, f.name) - getattr(one, f.name) for f in fields(Traffic)))


def estimate(i: Inputs) -> dict[str, float]:
    audio_s = i.tracks * i.mean_seconds
    gpu_worker_h = audio_s / i.gpu_xrt / 3600
    cpu_worker_h = audio_s / (i.cpu_xrt * i.cpu_worker_vcpus) / 3600
    wall_h = gpu_worker_h / i.gpu_workers
    gpu_worker_rate = (i.gpus_per_worker * i.gpu_price + i.gpu_worker_vcpus * i.vcpu_price
                       + i.gpu_worker_gb * i.mem_price)
    cpu_worker_rate = i.cpu_worker_vcpus * i.vcpu_price + i.cpu_worker_gb * i.mem_price
    per_track = traffic(i.mean_seconds, i.stems, i.fan_out, i.sample_rate, i.channels, i.bytes_per_sample)
    shuffle_gb = i.tracks * per_track.shuffled / 1e9
    scratch_gb = i.tracks * per_track.scratch / 1e9  # written, and the same read back
    scratch_objects = i.tracks * per_track.objects
    stems_gb = audio_s * i.stems * i.stem_kbps * 1000 / 8 / 1e9
    gpu_cost = gpu_worker_h * gpu_worker_rate
    cpu_cost = cpu_worker_h * cpu_worker_rate
    shuffle_cost = shuffle_gb * i.shuffle_price
    scratch_ops_cost = i.tracks * per_track.operations_cost(i.class_a_price, i.class_b_price)
    # A batch job starts each step after a shuffle once the one before has finished: the decoded chunks
    # are all in scratch through the inference stage, the stems fill over it, and reassembly (taken as
    # long) drains both: 1.5 and 1 times T on average (HELD_DECODED, HELD_SEPARATED).
    scratch_held_cost = i.tracks * per_track.held / 1e9 * wall_h / HOURS_PER_MONTH * i.storage_price
    # Soft delete keeps every deleted scratch object, billed as stored, for D_sd days after its deletion.
    scratch_soft_deleted_cost = scratch_gb * i.scratch_soft_delete_days * 24 / HOURS_PER_MONTH * i.storage_price
    total = gpu_cost + cpu_cost + shuffle_cost + scratch_ops_cost + scratch_held_cost + scratch_soft_deleted_cost
    return {
        "audio_hours": audio_s / 3600,
        "gpu_hours": gpu_worker_h * i.gpus_per_worker,
        "gpu_worker_hours": gpu_worker_h,
        "cpu_worker_hours": cpu_worker_h,
        "wall_hours": wall_h,
        "chunks": i.tracks * chunks_per_track(i.mean_seconds, i.sample_rate),
        "shuffle_gb": shuffle_gb,
        "scratch_gb": scratch_gb,
        "scratch_objects": scratch_objects,
        "scratch_class_a": i.tracks * per_track.class_a,
        "scratch_class_b": i.tracks * per_track.class_b,
        "gpu_cost": gpu_cost,
        "cpu_cost": cpu_cost,
        "shuffle_cost": shuffle_cost,
        "scratch_ops_cost": scratch_ops_cost,
        "scratch_held_cost": scratch_held_cost,
        "scratch_soft_deleted_cost": scratch_soft_deleted_cost,
        "total_cost": total,
        "cost_per_million_tracks": total * 1e6 / i.tracks,
        "cost_per_audio_hour": total / (audio_s / 3600),
        "stems_tb": stems_gb / 1000,
        "storage_cost_per_month": stems_gb * i.storage_price,
    }


# --- configurations priced from measured figures (--measured) ---------------------------------------

# The U-Net's arithmetic (models/unet.py), per instrument and model chunk of T frames x F bins: each
# convolution does 2 FLOPs (a multiply and an add) per kernel weight and output position; a transposed
# one per kernel weight and input position. Encoder: six 5x5 stride-2 convolutions; decoder: six 5x5
# stride-2 transposed ones, each of the first five fed its output joined to the encoder's of that level;
# then a 4x4 convolution from 1 to 2 channels. 12.2 GFLOP per instrument and 11.9 s chunk.
ENCODER_FILTERS = (16, 32, 64, 128, 256, 512)
DECODER_FILTERS = (256, 128, 64, 32, 16, 1)
KERNEL_TAPS, OUTPUT_TAPS = 5 * 5, 4 * 4
CHUNK_FRAMES, CHUNK_BINS, CHUNK_SECONDS = 512, 1024, CHUNK_STEP / 44_100


def unet_flops(frames: int = CHUNK_FRAMES, bins: int = CHUNK_BINS, channels: int = 2) -> float:
    """FLOPs of one instrument's U-Net on one chunk of magnitudes ``[frames, bins, channels]``."""
    flops, inputs, h, w = 0.0, channels, frames, bins
    for filters in ENCODER_FILTERS:
        h, w = h // 2, w // 2
        flops += 2 * h * w * KERNEL_TAPS * inputs * filters
        inputs = filters
    for level, filters in enumerate(DECODER_FILTERS):
        flops += 2 * h * w * KERNEL_TAPS * inputs * filters
        h, w = h * 2, w * 2
        skip = ENCODER_FILTERS[-2 - level] if level < len(DECODER_FILTERS) - 1 else 0
        inputs = filters + skip
    return flops + 2 * frames * bins * OUTPUT_TAPS * 1 * channels


@dataclass(frozen=True)
class Gpu:
    """A Dataflow GPU worker: its accelerator's published dense tensor throughput (TFLOPS) and example list
    prices. Estimates, not measurements: no GPU ran this project's network for these figures."""

    name: str
    machine: str
    vcpus: int
    gb: float
    price: float  # $ per GPU-hour, example list price
    tflops: dict  # precision -> published dense peak


GPUS = (Gpu("L4", "g2-standard-8", 8, 32.0, 0.56, {"fp32": 30.3, "bf16": 121.0}),
        Gpu("T4", "n1-standard-8", 8, 30.0, 0.35, {"fp32": 8.1}))  # no bf16 on a T4
# Share of the published peak a batch of U-Net chunks is assumed to reach (convolutions of 16 to 512
# channels; cuDNN rarely passes half the peak on such layers). An assumption, to replace by a measurement.
GPU_UTILISATION = 0.3
# Per track, besides scratch: its source read (a metadata get and a media get: Class B) and its S stems,
# completion record and share of the metadata file written (one upload each: Class A).
SOURCE_CLASS_B_PER_TRACK = 2
WRITES_CLASS_A_PER_TRACK = 2  # plus one per stem


def configurations(measured: dict, tracks: int, mean_seconds: float, vcpu_price: float, mem_price: float,
                   class_a_price: float, class_b_price: float, cpu_worker_vcpus: int = 8,
                   cpu_worker_gb: float = 32.0) -> list[dict]:
    """$ per ``tracks`` tracks of each configuration, whole tracks per worker (no scratch, no shuffle of
    audio), from ``measured`` (benchmarks/speed.py --json): CPU workers at the measured CPU seconds per
    audio minute; GPU workers at the slower of the estimated network and the measured decoding and
    encoding on their own vCPUs."""
    audio_minutes = tracks * mean_seconds / 60
    rows = []
    for key, cpu_s in sorted(measured["cpu_s_per_audio_minute"].items()):
        model, precision = key.rsplit("-", 1)
        stems = int(model.removesuffix("stems"))
        io = tracks * ((WRITES_CLASS_A_PER_TRACK + stems) * class_a_price
                       + SOURCE_CLASS_B_PER_TRACK * class_b_price) / 10_000
        worker_h = audio_minutes * cpu_s / cpu_worker_vcpus / 3600
        rate = cpu_worker_vcpus * vcpu_price + cpu_worker_gb * mem_price
        rows.append({"model": model, "precision": precision, "workers": f"CPU, n2-standard-{cpu_worker_vcpus}",
                     "basis": f"measured: {cpu_s:.1f} CPU s per audio minute", "worker_hours": worker_h,
                     "cost": worker_h * rate + io})
        host_s = measured["host_cpu_s_per_audio_minute"].get(model)
        if host_s is None:
            continue
        for gpu in (g for g in GPUS if precision in g.tflops):
            network_s = stems * unet_flops() / CHUNK_SECONDS * 60 / (gpu.tflops[precision] * 1e12 * GPU_UTILISATION)
            worker_s = max(network_s, host_s / gpu.vcpus)
            bound = "the GPU" if network_s >= host_s / gpu.vcpus else "decoding and encoding"
            worker_h = audio_minutes * worker_s / 3600
            rate = gpu.price + gpu.vcpus * vcpu_price + gpu.gb * mem_price
            rows.append({"model": model, "precision": precision, "workers": f"{gpu.name}, {gpu.machine}",
                         "basis": f"estimate: network {network_s:.3f} s per audio minute, bound by {bound}",
                         "worker_hours": worker_h, "cost": worker_h * rate + io})
    return rows


def configurations_markdown(rows: list[dict], tracks: int) -> str:
    lines = [f"| model | precision | workers | worker-hours | $ per {tracks:,} tracks | basis |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for row in sorted(rows, key=lambda r: (r["model"], r["cost"])):
        lines.append(f"| {row['model']} | {row['precision']} | {row['workers']} | {row['worker_hours']:,.0f} | "
                     f"{row['cost']:,.0f} | {row['basis']} |")
    lines.append("")
    for model in sorted({r["model"] for r in rows}):
        best = min((r for r in rows if r["model"] == model), key=lambda r: r["cost"])
        lines.append(f"cheapest for {model}: {best['workers']}, {best['precision']} (${best['cost']:,.0f})")
    return "\n".join(lines)


SHUFFLE_LABELS = {
    "chunks": "shuffle data (GB) = (2n + N·(1+S))·Q/1e9",
    "tracks": "shuffle data (GB) = N·(2+S)·Q/1e9",
}
ROWS = (  # key, label (or one per fan-out), format
    ("audio_hours", "audio to separate (h) = N·L/3600", "{:,.0f}"),
    ("gpu_hours", "GPU-hours = N·L/(X_gpu·3600)·G", "{:,.0f}"),
    ("gpu_worker_hours", "GPU worker-hours", "{:,.0f}"),
    ("cpu_worker_hours", "CPU worker-hours = N·L/(X_cpu·V_c·3600)", "{:,.0f}"),
    ("wall_hours", "wall clock with K GPU workers (h)", "{:,.1f}"),
    ("chunks", "model chunks n = N·((L·r + 4096)/524,288 + ½)", "{:,.0f}"),
    ("shuffle_gb", SHUFFLE_LABELS, "{:,.0f}"),
    ("scratch_gb", "scratch written, then read (GB) = n·((1+S)·span·c·b + 2·128)/1e9", "{:,.0f}"),
    ("scratch_objects", "scratch objects = 2n", "{:,.0f}"),
    ("scratch_class_a", "scratch Class A operations = 2n + N", "{:,.0f}"),
    ("scratch_class_b", "scratch Class B operations = 10n + N", "{:,.0f}"),
    ("gpu_cost", "GPU workers ($)", "{:,.0f}"),
    ("cpu_cost", "CPU workers ($)", "{:,.0f}"),
    ("shuffle_cost", "Dataflow Shuffle ($)", "{:,.2f}"),
    ("scratch_ops_cost", "scratch operations ($) = (A·P_A + B·P_B)/1e4", "{:,.0f}"),
    ("scratch_held_cost", "scratch storage while held ($) = (1.5·B_in + B_out)·T/730·P_store", "{:,.0f}"),
    ("scratch_soft_deleted_cost", "scratch kept by soft delete ($) = B_s·D_sd·24/730·P_store", "{:,.0f}"),
    ("total_cost", "total ($)", "{:,.0f}"),
    ("cost_per_million_tracks", "per million tracks ($)", "{:,.0f}"),
    ("cost_per_audio_hour", "per hour of audio ($)", "{:,.3f}"),
    ("stems_tb", "stems written (TB)", "{:,.1f}"),
    ("storage_cost_per_month", "keeping them, per month ($)", "{:,.0f}"),
)


def markdown(result: dict[str, float], fan_out: str = "chunks") -> str:
    lines = ["| quantity | value |", "| --- | ---: |"]
    for key, label, fmt in ROWS:
        label = label[fan_out] if isinstance(label, dict) else label
        lines.append(f"| {label} | {fmt.format(result[key])} |")
    return "\n".join(lines)


def size(n_bytes: float) -> str:
    if n_bytes == 0:
        return "0"
    if n_bytes >= 1e6:
        return f"{n_bytes / 1e6:,.1f} MB"
    if n_bytes >= 1e3:
        return f"{n_bytes / 1e3:,.1f} kB"
    return f"{n_bytes:,.0f} B"


def traffic_markdown(seconds: float, sample_rate: int = 44_100, channels: int = 2, bytes_per_sample: int = 4,
                     prices: tuple[float, float, float] | None = None) -> str:
    """Bytes shuffled and through scratch storage per minute of audio and per track of ``seconds``, and
    the track's scratch objects and requests; with ``prices`` (P_shuffle, P_A, P_B), what the shuffle and
    the scratch requests cost per million such tracks."""
    ways = (("chunks", "`chunks` (GPU)", TRAFFIC_STEMS), ("tracks", "`tracks` (CPU only)", TRAFFIC_STEMS),
            ("decoded", "`chunks` before 48e91db: decoded chunks shuffled", (4,)),
            ("shuffled", "before `--fan_out`: stems shuffled back", TRAFFIC_STEMS))
    header = (f"| fan-out | stems | shuffled per minute of audio | through scratch per minute | "
              f"shuffled per {seconds / 60:g}-minute track | through scratch per track | scratch objects per track | "
              f"scratch requests per track, Class A + B |")
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    if prices:
        header += " shuffle + scratch operations per million tracks ($) |"
        rule += " ---: |"
    lines = [header, rule]
    for way, label, stem_counts in ways:
        for stems in stem_counts:
            track = traffic(seconds, stems, way, sample_rate, channels, bytes_per_sample)
            # references are per chunk, or per track: a minute of `tracks` adds nothing
            minute = per_minute(stems, way, sample_rate, channels, bytes_per_sample)
            objects = f"{track.objects:.2f}" if track.objects else "0"
            requests = f"{track.class_a:.2f} + {track.class_b:.2f}" if track.class_a else "0"
            row = (f"| {label} | {stems} | {size(minute.shuffled)} | {size(minute.scratch)} | {size(track.shuffled)} | "
                   f"{size(track.scratch)} | {objects} | {requests} |")
            if prices:
                shuffle_price, class_a_price, class_b_price = prices
                cost = track.shuffled / 1e9 * shuffle_price + track.operations_cost(class_a_price, class_b_price)
                row += f" {cost * 1e6:,.2f} |"
            lines.append(row)
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[Inputs | None, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    required = []
    for field in fields(Inputs):
        option = "--" + field.name.replace("_", "-")
        if field.name == "fan_out":
            parser.add_argument(option, choices=FAN_OUTS, default=field.default, help="default: %(default)s")
            continue
        kind = int if field.type == "int" else float  # annotations are strings here
        if field.default is MISSING:
            required.append(option)
            parser.add_argument(option, type=kind, help="required (but with --traffic)")
        else:
            parser.add_argument(option, type=kind, default=field.default, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    parser.add_argument("--measured", metavar="FIGURES",
                        help="benchmarks/speed.py --json's figures: price CPU and GPU configurations of whole-track "
                             "workers for --tracks tracks of --mean-seconds (prices as given) and name the cheapest")
    parser.add_argument("--traffic", action="store_true",
                        help="print bytes shuffled and through scratch storage per minute of audio and per track "
                             "of --mean-seconds (default 210) instead; with --shuffle-price, --class-a-price and "
                             "--class-b-price, what they cost per million tracks")
    args = vars(parser.parse_args(argv))
    flags = {"json": args.pop("json"), "traffic": args.pop("traffic"), "measured": args.pop("measured")}
    if flags["measured"]:
        return None, {**flags, **args}
    if flags["traffic"]:
        args["mean_seconds"] = args["mean_seconds"] or 210.0
        if args["mean_seconds"] <= 0:
            parser.error("mean seconds must be positive")
        return None, {**flags, **args}
    missing = [o for o in required if args[o[2:].replace("-", "_")] is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    inputs = Inputs(**args)
    if min(inputs.tracks, inputs.mean_seconds, inputs.stems, inputs.gpu_xrt, inputs.cpu_xrt) <= 0:
        parser.error("tracks, mean seconds, stems and x-realtime figures must be positive")
    return inputs, flags


def main(argv: list[str] | None = None) -> int:
    inputs, flags = parse(argv)
    if inputs is None and flags["measured"]:
        try:
            with open(flags["measured"]) as f:
                measured = json.load(f)
            tracks, mean_seconds = flags["tracks"] or 1_000_000, flags["mean_seconds"] or 210.0
            rows = configurations(measured, tracks, mean_seconds, flags["vcpu_price"] or 0.056,
                                  flags["mem_price"] or 0.003557, flags["class_a_price"] or 0.05,
                                  flags["class_b_price"] or 0.004, flags["cpu_worker_vcpus"], flags["cpu_worker_gb"])
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            print(f"error: --measured {flags['measured']}: not benchmarks/speed.py --json figures ({exc!r})",
                  file=sys.stderr)
            return 2
        print(json.dumps(rows, indent=2) if flags["json"] else
              f"measured on {measured['machine']}\n\n{configurations_markdown(rows, tracks)}")
        return 0
    if inputs is None:
        prices = (flags["shuffle_price"], flags["class_a_price"], flags["class_b_price"])
        print(traffic_markdown(flags["mean_seconds"], flags["sample_rate"], flags["channels"],
                               flags["bytes_per_sample"], prices if None not in prices else None))
        return 0
    result = estimate(inputs)
    print(json.dumps(result, indent=2) if flags["json"] else markdown(result, inputs.fan_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
