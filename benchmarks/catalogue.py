"""The size of the catalogue itself: `beamsplitter plan` and a run's reading and skipping on 10k to 1M rows.

For each N, a CSV manifest of N rows over a few real small files, nearly all
of them already done: a real completion record (transforms/catalogue/completion.py) under
the output prefix, its metadata commit landed. One row in 100 names a missing
file (plan: "new"; run: a decode failure) and one in 1000 repeats an earlier
track_id (a duplicate: a failure row naming the first). So the run separates
nothing: it reads the manifest, de-duplicates it, checks every track and writes
the failure rows, which is what is measured. Wall time and peak RSS are the
whole command's (the largest of its processes), start-up included.

    .venv/bin/python benchmarks/catalogue.py [--rows 10000 100000 1000000] [--workdir DIR]

(``--rows 10``: the commands' start-up alone.)

The records of the largest N are written once (about 1.3 KB each, a folder per
track) and serve every N: allow about 5 GB of disk for a million.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

from common import BEAMSPLITTER, machine, measure, table

from pipeline import demo

SOURCES = 4


def track_id(i: int) -> str:
    return f"a{i % 1000:03d}/t{i:07d}"


def manifest_rows(n: int):
    """(track_id, uri index or None for a missing file) for each of ``n`` rows."""
    for i in range(n):
        if i % 1000 == 999:
            yield track_id(i - 500), i % SOURCES  # a duplicate of a row 500 earlier
        elif i % 100 == 50:
            yield track_id(i), None
        else:
            yield track_id(i), i % SOURCES


def write_catalogue(work: Path, n: int, sources: list[Path]) -> Path:
    path = work / f"manifest-{n}.csv"
    if not path.exists():
        with open(path.with_suffix(".tmp"), "w") as f:
            f.write("track_id,uri,artist\n")
            for tid, source in manifest_rows(n):
                uri = str(sources[source]) if source is not None else str(work / "missing" / f"{tid}.flac")
                f.write(f"{tid},{uri},artist {hash(tid) % 5000}\n")
        os.replace(path.with_suffix(".tmp"), path)
    return path


def write_records(prefix: Path, n: int, sources: list[Path], config, sha: str) -> None:
    """A completion record for every track of the first ``n`` rows whose source exists, as a run writes them."""
    from models.encoding import EncodeOptions
    from transforms.catalogue import storage
    from transforms.catalogue.layout import Layout, model_folder
    from transforms.catalogue.completion import CompletionRecord

    layout = Layout(str(prefix), model_folder(config.name, sha))
    done_marker = prefix / f".records-{n}"
    if done_marker.exists():
        return
    model = f"{config.name}@sha256:{sha}"
    encoding = EncodeOptions("wav").as_written()  # what a run with the default options writes
    fingerprints = [storage.fingerprint(str(s)) for s in sources]
    now = datetime.datetime.now(datetime.timezone.utc)
    started = time.monotonic()
    for tid, source in manifest_rows(n):
        if source is None:
            continue
        record_path = Path(layout.record(tid))
        if record_path.exists():
            continue
        stems = {i: layout.stem(tid, i, "wav") for i in config.instruments}
        rows = [{"track_id": tid, "instrument": i, "uri": uri, "source_uri": str(sources[source]),
                 "duration_s": 1.0, "sample_rate": 44100, "channels": 2, "codec": "wav", "model": model,
                 "peak": 0.5, "rms": 0.1, "run_id": "bench", "processed_at": now, "artist": "x"}
                for i, uri in stems.items()]
        record = CompletionRecord.of(tid, str(sources[source]), fingerprints[source], model, encoding, stems,
                                     "bench", "bench", rows)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_bytes(record.to_json())
    marker = Path(layout.commit_marker("bench"))  # the records' metadata commit landed: nothing to recover
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"files": 1}))
    done_marker.touch()
    print(f"wrote the completion records of {n} rows in {time.monotonic() - started:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default="spleeter:2stems")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beamsplitter-bench-catalogue"))
    args = parser.parse_args()

    from models.checkpoint import checkpoint_digest
    from models.config import load_config
    from models.provider import resolve_checkpoint

    config = load_config(args.model)
    checkpoint = resolve_checkpoint(config)
    sha = checkpoint_digest(checkpoint)
    work = Path(args.workdir)
    sources = [demo.make_track(work / "music" / f"s{i}.wav", seconds=1.0, seed=i) if not
               (work / "music" / f"s{i}.wav").exists() else work / "music" / f"s{i}.wav" for i in range(SOURCES)]
    prefix = work / "out"
    write_records(prefix, max(args.rows), sources, config, sha)
    common = ["--output", str(prefix), "-p", args.model, "--checkpoint", str(checkpoint)]

    results = []
    for n in sorted(args.rows):
        manifest = write_catalogue(work, n, sources)
        duplicates = sum(1 for i in range(n) if i % 1000 == 999)
        missing = sum(1 for i in range(n) if i % 100 == 50 and i % 1000 != 999)
        plan_file = work / f"plan-{n}.jsonl"
        plan = measure([BEAMSPLITTER, "plan", "--manifest", str(manifest), *common, "--plan_output", str(plan_file)])
        planned = sum(1 for _ in open(plan_file)) if plan_file.exists() else -1
        for old in (prefix / "failures").glob("run-*"):
            old.unlink()
        run = measure([BEAMSPLITTER, "run", "--manifest", str(manifest), *common])
        failures = _failure_rows(prefix / "failures")
        # The run exits 1 when it has failure rows: its duplicate and missing rows.
        ok = (planned == missing and failures == duplicates + missing and plan.returncode == 0
              and run.returncode == (1 if failures else 0))
        results.append([f"{n:,}", f"{plan.wall_s:.1f}", f"{plan.peak_rss_mb:.0f}", f"{run.wall_s:.1f}",
                        f"{run.peak_rss_mb:.0f}", f"{planned:,} planned, {failures:,} failure rows"
                        + ("" if ok else " (UNEXPECTED)")])
        print(table(["rows", "plan s", "plan peak MB", "run (skip) s", "run peak MB", "checked"], results[-1:]),
              flush=True)
    print(f"\n{args.model}; nearly every track done, 1 % missing files, 0.1 % duplicate rows; on {machine()}, "
          f"{datetime.date.today()}")
    print(table(["rows", "plan s", "plan peak MB", "run (skip) s", "run peak MB", "checked"], results))


def _failure_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in folder.glob("run-*.parquet"))


if __name__ == "__main__":
    main()
