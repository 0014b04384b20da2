"""The catalogue job's options, on top of Beam's own (``--runner``, ``--direct_num_workers``...)."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, _BeamArgumentParser

from models.errors import InputError
from pipeline import arguments
from transforms.catalogue import manifest
from transforms.job import FanOut

LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner")
FAN_OUTS = ("auto", *(mode.value for mode in FanOut))


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


class BeamsplitterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--manifest", help="catalogue manifest: .csv, .jsonl or .parquet, local, gs:// or s3://")
        source.add_argument("--input", help="glob of audio files taken as the catalogue (track_id from the path)")
        arguments.add_output(parser)
        arguments.add_model(parser)
        arguments.add_encoding(parser)
        parser.add_argument("--force", nargs="?", const=True, default=False, type=_flag,
                            help="redo tracks that are already done (also --force=true, for templates)")
        arguments.add_stems(parser)
        arguments.add_batch(parser)
        parser.add_argument("--inference_accelerator", default=None,
                            help="resource hint for the step that runs the model (decoding, separation and "
                                 "encoding of whole tracks; with --fan_out=chunks inference alone), e.g. "
                                 "'type:nvidia-tesla-t4;count:1;install-nvidia-driver'")
        parser.add_argument("--fan_out", default="auto", choices=FAN_OUTS,
                            help="how work spreads over workers: 'tracks' (each worker separates whole tracks, "
                                 "no audio crosses a shuffle), 'chunks' (model chunks go to the inference step "
                                 "and back through scratch storage under the output prefix, only references "
                                 "are shuffled), "
                                 "'none' (one process); auto: none on the local runner, else tracks; with "
                                 "--inference_accelerator the whole-track step runs on the accelerator's machines")
        parser.add_argument("--scratch_location", default=None,
                            help="--fan_out=chunks: where chunks wait between the steps (default: PREFIX/scratch); "
                                 "a bucket or prefix that deletes old objects and keeps no deleted ones")
        parser.add_argument("--model_copies", type=int, default=None,
                            help="models per worker machine, shared by its SDK processes (Beam's model_copies); "
                                 "default: 1 with --inference_accelerator, else one model per SDK process")
        arguments.add_decoding(parser)
        parser.add_argument("--max_failed_fraction", type=float, default=1.0, metavar="F",
                            help="the run fails as a whole (exit status 3; on a distributed runner a failed "
                                 "job) when more than this share of the tracks it tried failed "
                                 "(default: %(default)g, never)")
        parser.add_argument("--run_id", default=None,
                            help="names this run in metadata (default: time-based); one used before under "
                                 "the output prefix is refused")
        parser.add_argument("--local_wave_tracks", type=int, default=8,
                            help="local runner: tracks to separate per wave, one pipeline each "
                                 "(progress is reported per wave)")
        # What a manifest may hold and name (transforms.catalogue.manifest.Limits).
        parser.add_argument("--max_manifest_row_bytes", type=int, default=manifest.MAX_ROW_BYTES, metavar="BYTES",
                            help="a longer manifest row (JSON line, CSV row, Parquet row's cells) is a failure row "
                                 "(default: %(default)s)")
        parser.add_argument("--max_manifest_columns", type=int, default=manifest.MAX_COLUMNS,
                            help="columns a manifest may carry into the metadata besides track_id and uri; a CSV "
                                 "or Parquet manifest with more is refused, a JSON line bringing more is a "
                                 "failure row (default: %(default)s)")
        parser.add_argument("--max_manifest_row_group_bytes", type=int, default=manifest.MAX_ROW_GROUP_BYTES,
                            metavar="BYTES", help="a Parquet manifest with a row group taking more to read is "
                                                  "refused (default: %(default)s)")
        parser.add_argument("--allow_source_outside_manifest", nargs="?", const=True, default=False, type=_flag,
                            help="let a manifest's relative URIs lead outside its folder (.., symbolic links)")

    def check(self) -> None:
        if not (self.manifest or self.input):
            raise InputError("give the catalogue with --manifest URI or --input GLOB")
        if not self.output:
            raise InputError("give the output prefix with --output")
        folder = manifest.glob_folder(self.input or "")
        descends = any(mark in self.input[len(folder):] for mark in ("/", "**")) if self.input else False
        if descends and manifest.is_below(self.output, folder):
            # Each run would then take the stems of the one before for new tracks.
            raise InputError(f"--output {self.output} lies inside the folder that --input {self.input} lists; "
                             "write the stems outside it")
        for option, least in (("max_manifest_row_bytes", 1), ("max_manifest_row_group_bytes", 1),
                              ("max_manifest_columns", 0)):  # 0 columns: track_id and uri only
            if getattr(self, option) < least:
                raise InputError(f"--{option} {getattr(self, option)}: give at least {least}")
        arguments.check(self, local=is_local(self))
        if self.local_wave_tracks < 1:
            raise InputError(f"--local_wave_tracks {self.local_wave_tracks}: give at least 1")
        if not 0 <= self.max_failed_fraction <= 1:
            raise InputError(f"--max_failed_fraction {self.max_failed_fraction:g}: give a share from 0 to 1")
        if self.model_copies is not None and self.model_copies < 1:
            raise InputError(f"--model_copies {self.model_copies}: give at least 1")

    def manifest_limits(self) -> manifest.Limits:
        return manifest.Limits(self.max_manifest_row_bytes, self.max_manifest_columns,
                               self.max_manifest_row_group_bytes, self.allow_source_outside_manifest)

    def fan_out_mode(self, local: bool) -> FanOut:
        """``--fan_out`` with ``auto`` settled for the runner at hand.

        Whole tracks per worker is cheapest, with an accelerator too: nothing
        but track references crosses a shuffle, and the accelerator's machines
        decode, separate and encode (several tracks at once, so that the
        model gets full batches). Chunk fan-out, which parks every chunk in
        scratch storage, is only ever asked for.
        """
        if self.fan_out != "auto":
            return FanOut(self.fan_out)
        return FanOut.NONE if local else FanOut.TRACKS

    def shared_model_copies(self) -> int | None:
        """Models per machine shared across SDK processes, or None for one per process."""
        if self.model_copies is not None:
            return self.model_copies
        return 1 if self.inference_accelerator else None


def job_args(argv: list[str], command: str, own: tuple[type[PipelineOptions], ...] = (BeamsplitterOptions,)) -> list[str]:
    """``argv`` with the job's own options (those of ``own``) in Beam's spelling, ``--sample_format``
    for ``--sample-format`` too; an InputError for any argument that neither the job nor Beam knows.

    Beam only warns about arguments it cannot parse and drops them, so that a typo
    (``--forcee``, ``--codecc flac``) would run the job without the option. The
    arguments are parsed here as Beam parses them (``PipelineOptions.get_all_options``:
    every option class declared, no abbreviations), the job's being ``own``.
    """
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False, exit_on_error=False)
    for cls in own:
        cls._add_argparse_args(parser)
    spellings = {}  # the documented spelling (declared first) of each option, by its underscored form
    for name in parser._option_string_actions:
        if name.startswith("--"):
            spellings.setdefault(name.replace("-", "_"), name)
    normal = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if name.startswith("--") and "-" in name[2:] and name.replace("-", "_") in spellings:
            arg = spellings[name.replace("-", "_")] + equals + value
        normal.append(arg)
    # Every option class Beam would parse with (Beam's, and any a launcher declares), less the other
    # commands' own (plan's --plan_output is no option of run's).
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()
               if cls not in own and cls not in COMMAND_OPTIONS}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    try:
        _, unknown = parser.parse_known_args(normal)
    except argparse.ArgumentError as exc:
        raise InputError(f"{command}: {exc}") from None
    if unknown:
        named = [arg.partition("=")[0] for arg in unknown if arg.startswith("-")] or unknown
        raise InputError(f"{command}: unknown argument{'s' if len(named) > 1 else ''} {' '.join(named)} "
                         f"(see beamsplitter {command} --help; Apache Beam's options are accepted too)")
    return normal


class PlanOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--plan_output", default=None,
                            help="where to write the plan (default: PREFIX/plans/<model>/plan-<run_id>.jsonl)")


COMMAND_OPTIONS = (BeamsplitterOptions, PlanOptions)  # each command's own, no option of the others'


class FlinkJarOptions(PipelineOptions):
    """The Flink job server's Java option pipelineResourcesDetectorFactoryClass, declared so that it
    travels with the job: the job server passes on only the options Python declares.

    scripts/flink-cluster prints it with the class its job server jar holds, which uploads no jars with
    each job (its cluster has them all on its classpath) instead of about 150 MB (15 s) a job.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--pipeline_resources_detector_factory_class", default=None,
                            help="Java class choosing the jars the Flink job server uploads with each job")


def pin_local_runner(options: PipelineOptions) -> bool:
    """Run DirectRunner as Beam's portable local runner, the FnApiRunner; returns whether the run is local.

    Beam's DirectRunner would first try to download the Prism runner binary;
    the FnApiRunner is the same local engine without that step. Its default
    mode runs bundles in this process: one model, which TensorFlow runs on all
    cores. (Beam's multi_threading mode can corrupt large elements between its
    workers, seen as "Invalid PaneInfoEncoding"; multi_processing is sound and
    loads one model per worker process.)
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in LOCAL_RUNNERS:
        standard.runner = "FnApiRunner"
    return is_local(options)


def is_local(options: PipelineOptions) -> bool:
    """Whether the (pinned) runner runs the job in this process."""
    return options.view_as(StandardOptions).runner in ("FnApiRunner", "BundleBasedDirectRunner")
