"""The ``beamsplitter`` command: a thin layer of argument parsing over the library."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time

from models.errors import BeamsplitterError, InputError

def _separate(args) -> int:
    from tqdm import tqdm

    from pipeline import arguments, tensorflow_quietly

    # Every option is checked before TensorFlow and the model load, and before the first track is decoded.
    encoding = arguments.check(args)
    arguments.check_span(args.offset, args.duration)
    selection = arguments.stem_selection(args)
    tensorflow_quietly.load()
    from models.provider import load_separator
    from pipeline.separate import separate_files, track_jobs

    # Stems that would land on one path are refused before any weights are fetched or loaded.
    jobs = track_jobs(args.files, args.output, args.filename_format, selection.names, args.codec,
                      args.offset, args.duration)
    separator = load_separator(args.model, args.checkpoint, args.precision)
    failures = 0
    with tqdm(unit="s", desc="separating", unit_scale=True, disable=None, file=sys.stderr,
              bar_format="{desc}: {n:.0f} s of audio [{elapsed}, {rate_fmt}]") as bar:

        def report(result):
            nonlocal failures
            if result.ok:
                folders = sorted({os.path.dirname(path) for path in result.job.outputs.values()})
                bar.write(f"{result.job.source}: {len(result.job.outputs)} stems in {', '.join(folders)}",
                          file=sys.stderr)
            else:
                failures += 1
                bar.write(f"error: {result.error}", file=sys.stderr)

        separate_files(separator, jobs, encoding,
                       batch_size=args.inference_batch_size, on_progress=bar.update, on_result=report, mwf=args.mwf,
                       io=arguments.io_limits(args), selection=selection)
    return 1 if failures else 0


def _fetch(args) -> int:
    from models.config import load_config
    from models.provider import resolve_checkpoint

    print(resolve_checkpoint(load_config(args.model), args.checkpoint))
    return 0


def _export_model(args) -> int:
    from pipeline import tensorflow_quietly

    tensorflow_quietly.load()
    from models.export import export_saved_model
    from models.provider import load_separator

    separator = load_separator(args.model, args.checkpoint)
    export_saved_model(separator, args.directory)
    print(f"{args.model}: SavedModel written to {args.directory}")
    return 0


# What changes a plan: the catalogue, the output, the model and what "done" means.
PLAN_OPTIONS = {"manifest", "input", "output", "model", "checkpoint", "precision", "codec", "bitrate", "sample_format",
                "stems", "two_stems", "force", "plan_output"}


def _job_help(command: str) -> int:
    from pipeline.options import BeamsplitterOptions, PlanOptions

    parser = argparse.ArgumentParser(prog=f"beamsplitter {command}", epilog="Any Apache Beam pipeline "
                                     "option is accepted too: --runner, --direct_num_workers, --flink_master...")
    BeamsplitterOptions._add_argparse_args(parser)
    if command == "plan":
        PlanOptions._add_argparse_args(parser)
        for action in parser._actions:
            if action.dest not in PLAN_OPTIONS | {"help"}:
                action.help = argparse.SUPPRESS
    parser.print_help()
    return 0


def _job(args) -> int:
    """`run` and `plan`: their options are Beam pipeline options, parsed by Beam."""
    if {"-h", "--help"} & set(args.beam_args):
        return _job_help(args.command)
    if args.command == "plan":
        from pipeline.plan import plan

        return plan(args.beam_args, args.started)
    from pipeline.run import run

    return run(args.beam_args, args.started).exit_status


def _demo_catalogue(args) -> int:
    from pipeline.demo import make_catalogue

    if args.tracks < 1:
        raise InputError(f"--tracks {args.tracks}: give at least 1")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise InputError(f"--seconds {args.seconds:g}: give the length of each track in seconds, above 0")
    manifest = make_catalogue(args.directory, args.tracks, args.seconds)
    print(f"demo catalogue: {manifest} ({args.tracks} tracks of {args.seconds:g} s)")
    return 0


def _evaluate(args) -> int:
    from pipeline import arguments, tensorflow_quietly

    arguments.check(args)
    tensorflow_quietly.load()
    from pipeline.evaluate import evaluate

    return evaluate(args.dataset, args.output, args.model, args.checkpoint, args.oracle, args.precision)


def _report(args) -> int:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import job_args
    from pipeline.report import write_report

    # Beam's filesystem options (s3 endpoint, credentials...); any other argument is refused.
    FileSystems.set_options(PipelineOptions(job_args(args.beam_args, "report", own=())))
    page = write_report(args.output, args.report_dir, args.sample, args.seed, args.evaluation)
    print(f"report: {page}")
    return 0


def _train(args) -> int:
    from pipeline import arguments, tensorflow_quietly
    from pipeline.options import job_args

    beam_args = job_args(args.beam_args, "train")
    arguments.check(args)
    tensorflow_quietly.load()
    from pipeline.train import TrainRequest, train

    return train(TrainRequest(
        config=args.config, dataset=args.dataset, model_dir=args.output, init=args.init, data_dir=args.data_dir,
        epochs=args.epochs, steps=args.steps, seed=args.seed, crops_per_chunk=args.crops_per_chunk,
        augment=args.augment, min_level_db=args.min_level_db, precision=args.precision, beam_args=beam_args))


def build_parser() -> argparse.ArgumentParser:
    from pipeline import arguments

    parser = argparse.ArgumentParser(prog="beamsplitter", allow_abbrev=False, description="Spleeter's source separation, at catalogue scale.")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    # Also after the command (`beamsplitter run --verbose ...`); SUPPRESS keeps one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show library logs")
    commands = parser.add_subparsers(dest="command", required=True)

    separate = commands.add_parser("separate", allow_abbrev=False, parents=[common], help="separate audio files into stems on this machine")
    separate.add_argument("files", nargs="+", metavar="FILE", help="audio files (anything ffmpeg reads)")
    arguments.add_output(separate, os.path.join(tempfile.gettempdir(), "separated_audio"), "output folder")
    arguments.add_model(separate)
    arguments.add_encoding(separate)
    separate.add_argument("-f", "--filename_format", default="{filename}/{instrument}.{codec}",
                          help="stem path under the output folder; placeholders {filename}, {foldername}, "
                               "{instrument}, {codec} (default: %(default)s)")
    separate.add_argument("-s", "--offset", type=float, default=0.0, help="start, in seconds (default: 0)")
    separate.add_argument("-d", "--duration", type=float, default=None,
                          help="seconds to separate from the offset (default: the whole track)")
    separate.add_argument("--mwf", action="store_true",
                          help="multichannel Wiener filtering, as Spleeter's --mwf (reads each track twice)")
    arguments.add_batch(separate)
    arguments.add_stems(separate)
    arguments.add_decoding(separate)
    separate.set_defaults(handler=_separate)

    run = commands.add_parser("run", allow_abbrev=False, parents=[common], add_help=False,
                              help="separate a whole catalogue with Apache Beam (see `beamsplitter run --help`)")
    run.set_defaults(handler=_job)
    plan = commands.add_parser("plan", allow_abbrev=False, parents=[common], add_help=False,
                               help="write the manifest of what `run` would do (new, changed, new model) and count it")
    plan.set_defaults(handler=_job)

    demo = commands.add_parser("demo-catalogue", allow_abbrev=False, parents=[common], help="make a small synthetic catalogue to try `run` on")
    demo.add_argument("directory", metavar="DIR")
    demo.add_argument("--tracks", type=int, default=4)
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.set_defaults(handler=_demo_catalogue)

    evaluate = commands.add_parser("evaluate", allow_abbrev=False, parents=[common], help="separate a dataset with true stems and score it (BSSEval v4)")
    evaluate.add_argument("--dataset", required=True, metavar="DIR_OR_MANIFEST",
                          help="musdb-style folder (<track>/mixture.wav, <track>/<instrument>.wav) or a manifest "
                               "(.csv, .jsonl, .parquet: track_id, mixture, one column per instrument); "
                               "local, gs:// or s3://")
    arguments.add_output(evaluate, what="folder for frames.parquet, tracks.parquet, sdr.png and the separated stems",
                         required=True)
    arguments.add_model(evaluate)
    evaluate.add_argument("--oracle", action="store_true",
                          help="separate with ideal ratio masks from the true stems instead of the model")
    evaluate.set_defaults(handler=_evaluate)

    train = commands.add_parser("train", allow_abbrev=False, parents=[common], help="train or fine-tune a model on tracks with their stems (the "
                                              "training set is prepared by a Beam job)",
                                epilog="Apache Beam pipeline options are accepted too (--runner, --flink_master...), "
                                       "and --local_wave_tracks N: tracks per pipeline on the local runner "
                                       "(default 8).")
    train.add_argument("--config", required=True, metavar="JSON",
                       help="Spleeter configuration: a JSON file (T, F, batch_size, learning_rate, instrument_list, "
                            "model...) or an embedded name such as spleeter:2stems")
    train.add_argument("--dataset", required=True, metavar="MANIFEST",
                       help="training manifest (.csv, .jsonl, .parquet; local, gs:// or s3://) with mix_path (or "
                            "mixture) and <instrument>_path columns, paths relative to its folder")
    train.add_argument("--init", metavar="MODEL", help="start from these weights: an embedded model's released "
                       "checkpoint (spleeter:2stems) or a checkpoint folder or URI (default: the model folder's "
                       "own checkpoint if it has one, else fresh weights)")
    train.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                       help="model folder: Spleeter checkpoint, params.json, history.json, loss.png")
    train.add_argument("--epochs", type=float, default=1.0, help="passes over the kept crops (default: 1)")
    train.add_argument("--steps", type=int, default=None, help="training steps (batches); overrides --epochs")
    train.add_argument("--seed", type=int, default=None,
                       help="seeds crops, fresh weights and shuffling (default: the configuration's random_seed)")
    arguments.add_option(train, ("--crops_per_chunk",), ("--crops-per-chunk",), type=int, default=4,
                         help="random crops of T frames drawn from each 20 s chunk (default: 4)")
    train.add_argument("--augment", action="store_true",
                       help="random time stretch (0.9-1.1) and pitch shift (+-1 semitone) of every crop")
    arguments.add_option(train, ("--min_level_db",), ("--min-level-db",), type=float, default=-50.0,
                         help="leave out crops whose mixture is this far below the training set's mean power "
                              "(default: -50)")
    arguments.add_option(train, ("--data_dir",), ("--data-dir",), metavar="URI",
                         help="where the training records go: local or gs:// (default: MODEL_DIR/trainset; give "
                              "one every worker can reach on distributed runners)")
    arguments.add_precision(train, "the written checkpoint is float32 either way")
    train.set_defaults(handler=_train)

    report = commands.add_parser("report", allow_abbrev=False, parents=[common], help="write an HTML page on a catalogue output: runs, "
                                 "failures, stem levels, a sample of tracks to listen to",
                                 epilog="Apache Beam filesystem options are accepted too (--s3_endpoint_url...).")
    report.add_argument("output", metavar="OUT", help="the --output of `beamsplitter run`: local, gs:// or s3://")
    arguments.add_option(report, ("-o", "--report_dir"), ("--report-dir",), default="report", metavar="DIR",
                         help="local folder for index.html, its figures and previews (default: %(default)s)")
    report.add_argument("--sample", type=int, default=5, metavar="N",
                        help="tracks to preview, mix and stems (default: %(default)s)")
    report.add_argument("--seed", type=int, default=0, help="seeds the sample (default: %(default)s)")
    report.add_argument("--evaluation", metavar="DIR",
                        help="an output of `beamsplitter evaluate`: its scores join the report")
    report.set_defaults(handler=_report)

    fetch = commands.add_parser("fetch", allow_abbrev=False, parents=[common], help="fetch a model's weights into the cache (saying from "
                                "where) and print their folder; `run` and `separate` fetch them too when needed")
    arguments.add_model(fetch, precision=False)
    fetch.set_defaults(handler=_fetch)

    export = commands.add_parser("export-model", allow_abbrev=False, parents=[common], help="write a model as a TensorFlow SavedModel")
    export.add_argument("directory", metavar="DIR")
    arguments.add_model(export, precision=False)
    export.set_defaults(handler=_export_model)
    return parser


def _process_age() -> float:
    """Seconds since this process started, as the kernel counts (Linux's /proc); 0 where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    # run's and plan's wall time covers the whole command: from this process's start when it is the
    # command (argv from its command line), else from this call.
    started = time.monotonic() - (_process_age() if argv is None else 0.0)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.started = started
    if args.command in ("run", "plan", "train", "report"):
        args.beam_args = extra  # the job's and Beam's options, parsed by PipelineOptions
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.handler(args)
    except BeamsplitterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
