"""beamsplitter separate against spleeter separate: same tracks, same checkpoints, one run.

For each model (2stems with the official weights; 4stems with a checkpoint of
Spleeter's 4stems shape and random weights, which cost the network what real
ones do) and each precision this CPU runs, one ``separate`` call on all tracks:

* wall seconds, x-realtime and its ratio to ``spleeter separate`` (2.4.2) on the
  same tracks, one call, fp32 (Spleeter has no other precision);
* CPU seconds per minute of audio, every process counted (ffmpeg's too): what a
  CPU worker pays, the cost model's input (infra/dataflow/COSTS.md);
* start-up (``separate`` on a 1-second file) and the run with it taken out;
* the network-only bound: the network alone over the same tracks' chunks, same
  precision and batch, in a process of its own; the run without start-up as a
  share of it says what the spectral stages, decoding and encoding cost on top.

    .venv/bin/python benchmarks/speed.py [--tracks 3] [--seconds 180] [--models 2stems,4stems]
                                         [--precisions fp32,bf16] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BEAMSPLITTER, REPO, ffmpeg_binary, machine, measure, reference_spleeter, table, track


def checkpoint_for(model: str, work: Path) -> Path:
    """The official weights where this machine has them (2stems), else random ones in Spleeter's shape,
    written where Spleeter's ``MODEL_PATH`` finds them too."""
    from models.checkpoint import random_weights, write_checkpoint
    from models.config import load_config
    from models.provider import resolve_checkpoint

    config = load_config(model)
    if config.model_dir == "2stems":
        return resolve_checkpoint(config)
    directory = work / "random" / config.model_dir
    if not (directory / "checkpoint").exists():
        write_checkpoint(directory, random_weights(config, seed=0))
    return directory


def network_only(model: str, checkpoint: str, precision: str, batch_size: int, tracks: list[str]) -> dict:
    """Seconds the network alone takes over every chunk of ``tracks`` (run in a process of its own, as the
    ``separate`` it bounds: no other model's threads or memory beside it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from models import spectral
    from models.decoding import load
    from models.chunking import segments
    from models.provider import load_separator

    separator = load_separator(model, checkpoint, precision=precision)
    config = separator.config
    magnitudes = []
    for path in tracks:
        waveform = load(path, config.sample_rate)
        for segment in segments([waveform], separator.geometry):
            magnitudes.append(spectral.analyze(segment.samples[None], config)[1].numpy()[0])
    batches = [np.stack(magnitudes[i:i + batch_size]) for i in range(0, len(magnitudes), batch_size)]
    separator.estimate(batches[0], batch_size)  # traced and warm
    started = time.perf_counter()
    for batch in batches:
        separator.estimate(batch, batch_size)
    return {"chunks": len(magnitudes), "seconds": time.perf_counter() - started}


def host_stages(tracks: list[str], stems: int, work: Path) -> float:
    """CPU seconds ffmpeg spends decoding ``tracks`` and encoding ``stems`` 16-bit WAV stems of each, their
    loudness measured as the catalogue job's encoder measures it: what a worker's CPUs still do when the
    chunk maths runs on an accelerator (the cost model's host figure)."""
    from models.loudness import FILTER

    ffmpeg, cpu = ffmpeg_binary(), 0.0
    for i, path in enumerate(tracks):
        raw = work / f"decoded-{i}.f32"
        decoded = measure([ffmpeg, "-v", "error", "-y", "-i", path, "-f", "f32le", "-ac", "2", "-ar", "44100", str(raw)])
        cpu += decoded.cpu_s
        for stem in range(stems):
            cpu += measure([ffmpeg, "-v", "error", "-y", "-f", "f32le", "-ac", "2", "-ar", "44100", "-i", str(raw),
                            "-c:a", "pcm_s16le", str(work / f"stem-{stem}.wav"), "-af", FILTER, "-f", "null",
                            "-"]).cpu_s
        raw.unlink()
    return cpu


def precisions_here(asked: list[str]) -> list[str]:
    from models.errors import InputError
    from models.precision import check_precision

    found = []
    for precision in asked:
        try:
            check_precision(precision)
            found.append(precision)
        except InputError as refused:  # printed, and the benchmark goes on without it
            print(f"({precision} skipped: {refused})")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--models", default="2stems,4stems", help="comma-separated, e.g. 2stems,4stems,5stems")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench"))
    parser.add_argument("--json", help="also write the figures here, for infra/dataflow/cost_model.py --measured")
    parser.add_argument("--network-only", help=argparse.SUPPRESS)  # MODEL CHECKPOINT PRECISION TRACKS (JSON)
    args = parser.parse_args()
    if args.network_only:
        model, checkpoint, precision, tracks = json.loads(args.network_only)
        print(json.dumps(network_only(model, checkpoint, precision, args.batch_size, tracks)))
        return

    from models.config import load_config

    work = Path(args.workdir)
    tracks = [str(track(work / "tracks", f"t{args.seconds:.0f}-{i}", args.seconds, seed=i))
              for i in range(args.tracks)]
    second = str(track(work / "tracks", "t1", 1.0, seed=99))
    audio_s = args.tracks * args.seconds
    spleeter = reference_spleeter()
    precisions = precisions_here(args.precisions.split(","))
    print(f"{args.tracks} tracks x {args.seconds:.0f} s, batch {args.batch_size}, on {machine()}\n")
    rows, figures = [], {"machine": machine(), "audio_seconds": audio_s, "cpu_s_per_audio_minute": {},
                         "host_cpu_s_per_audio_minute": {}, "x_realtime": {}, "spleeter_x_realtime": {}}
    for name in args.models.split(","):
        model = f"spleeter:{name}"
        checkpoint = checkpoint_for(model, work)
        sp = measure([str(spleeter), "separate", *tracks, "-o", str(work / "sp"), "-p", model,
                      "-d", str(args.seconds + 1)], {"MODEL_PATH": str(checkpoint.parent)})
        sp_speed = audio_s / sp.wall_s
        figures["spleeter_x_realtime"][name] = sp_speed
        rows.append([name, "spleeter separate 2.4.2 (fp32)", f"{sp.wall_s:.1f}", f"{sp_speed:.1f}x", "1.00x",
                     f"{sp.cpu_s / (audio_s / 60):.1f}", f"{sp.peak_rss_mb / 1024:.2f}", "", ""])
        for precision in precisions:
            command = [BEAMSPLITTER, "separate", "-p", model, "--checkpoint", str(checkpoint), "--inference_batch_size",
                       str(args.batch_size), "--precision", precision]
            start = measure([*command, second, "-o", str(work / "start")])
            run = measure([*command, *tracks, "-o", str(work / "bs")])
            bound = json.loads(subprocess.run(
                [sys.executable, __file__, "--batch-size", str(args.batch_size), "--network-only",
                 json.dumps([model, str(checkpoint), precision, tracks])],
                check=True, capture_output=True, text=True, cwd=REPO).stdout.strip().splitlines()[-1])
            speed, warm = audio_s / run.wall_s, audio_s / max(run.wall_s - start.wall_s, 1e-9)
            ceiling = audio_s / bound["seconds"]
            figures["cpu_s_per_audio_minute"][f"{name}-{precision}"] = run.cpu_s / (audio_s / 60)
            figures["x_realtime"][f"{name}-{precision}"] = speed
            rows.append([name, f"beamsplitter separate ({precision})", f"{run.wall_s:.1f}", f"{speed:.1f}x",
                         f"{speed / sp_speed:.2f}x", f"{run.cpu_s / (audio_s / 60):.1f}",
                         f"{run.peak_rss_mb / 1024:.2f}", f"{start.wall_s:.1f}",
                         f"{warm:.1f}x of {ceiling:.1f}x: {warm / ceiling:.0%}"])
        host = host_stages(tracks, len(load_config(model).instruments), work)
        figures["host_cpu_s_per_audio_minute"][name] = host / (audio_s / 60)
        rows.append([name, "decoding, encoding and loudness alone (ffmpeg, WAV stems)", "", "", "",
                     f"{host / (audio_s / 60):.2f}", "", "", ""])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(table(["model", "run", "wall s", "x realtime", "vs Spleeter", "CPU s per audio min", "peak RSS GB",
                 "start-up s", "without start-up, of the network-only bound"], rows))


if __name__ == "__main__":
    main()
