#!/usr/bin/env python3
"""Deploy beamsplitter on Flink on Kubernetes (GKE), with the Flink Kubernetes Operator installed.

    python3 infra/flink/deploy.py --image IMAGE --artifacts-dir gs://WORK/beam-artifacts \\
        --gcp-service-account beamsplitter-worker@PROJECT.iam.gserviceaccount.com \\
        --manifest gs://CATALOGUE/manifest.csv --output gs://STEMS/prefix -p spleeter:4stems [--run-now]
    ... --dry-run   renders the manifests and prints the kubectl commands instead of running them

Fills the ${...} values of the manifests beside this file into --render-dir (default: a new
temporary folder), applies them in --namespace, binds the operator's `flink` service account to
the GCP service account (Workload Identity), and with --run-now starts a run at once instead of
waiting for the schedule.
"""

from __future__ import annotations

import argparse
import datetime
import re
import string
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `infra`
from infra import common  # noqa: E402
from infra.dataflow.beamsplitter_job import MAX_FAILED_FRACTION  # noqa: E402

HERE = Path(__file__).resolve().parent
MANIFESTS = ("serviceaccount.yaml", "flink-session.yaml", "job-server.yaml", "reprocess-cronjob.yaml")
CRONJOB = "beamsplitter-reprocess"
WORKLOAD_IDENTITY = "iam.gke.io/gcp-service-account"


def plain(value: str) -> str:
    """``value`` if it can go between double quotes in YAML as it is; argparse type."""
    if not value or re.search(r'["\\\n\r]', value):
        raise argparse.ArgumentTypeError(f"{value!r}: empty, or has a quote, backslash or line break")
    return value


def cron(value: str) -> str:
    if len(plain(value).split()) != 5:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a five-field cron schedule")
    return value


def high_availability(storage_dir: str | None) -> str:
    """Flink configuration lines (flink-session.yaml) for Kubernetes HA with its metadata in ``storage_dir``: a
    JobManager that dies is replaced and resumes its jobs from there, instead of failing them."""
    if not storage_dir:
        return ""
    return ("    high-availability.type: kubernetes\n"
            f'    high-availability.storageDir: "{storage_dir}"\n')


def values(args) -> dict[str, str]:
    """What the manifests' ${...} placeholders stand for."""
    return {"IMAGE": args.image, "ARTIFACTS_DIR": args.artifacts_dir, "GCP_SERVICE_ACCOUNT": args.gcp_service_account,
            "MANIFEST": args.manifest, "OUTPUT": args.output, "MODEL": args.model, "SCHEDULE": args.schedule,
            "PARALLELISM": str(args.parallelism), "MAX_FAILED_FRACTION": f"{args.max_failed_fraction:g}",
            "DEADLINE_SECONDS": str(int(args.deadline_hours * 3600)),
            "HIGH_AVAILABILITY": high_availability(args.ha_storage_dir)}


def render(folder: Path, mapping: dict[str, str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MANIFESTS:
        text = string.Template((HERE / name).read_text()).substitute(mapping)  # a missing value fails here
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def commands(args, rendered: list[Path]) -> list[list[str]]:
    namespace = ["--namespace", args.namespace]
    apply = ["kubectl", "apply", *namespace]
    for path in rendered:
        apply += ["-f", str(path)]
    steps = [apply, ["kubectl", "annotate", *namespace, "serviceaccount", "flink",
                     f"{WORKLOAD_IDENTITY}={args.gcp_service_account}", "--overwrite"]]
    if args.run_now:
        name = f"{CRONJOB}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
        steps.append(["kubectl", "create", *namespace, "job", name, f"--from=cronjob/{CRONJOB}"])
    return steps


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default="beamsplitter", help="watched by the operator (default: %(default)s)")
    parser.add_argument("--image", type=common.pinned_image, required=True, help="the beamsplitter image")
    parser.add_argument("--artifacts-dir", type=common.gcs_uri, required=True,
                        help="where the job server stages the job's artifacts, e.g. gs://WORK/beam-artifacts")
    parser.add_argument("--gcp-service-account", type=plain, required=True,
                        help="reads the catalogue and writes the stems (Workload Identity)")
    parser.add_argument("--manifest", type=plain, required=True)
    parser.add_argument("--output", type=plain, required=True)
    parser.add_argument("-p", "--model", type=plain, default="spleeter:2stems")
    parser.add_argument("--schedule", type=cron, default="0 3 * * 0", help="cron, UTC (default: %(default)s)")
    parser.add_argument("--parallelism", type=int, default=16, help="Flink parallelism of the job (default: 16)")
    parser.add_argument("--max-failed-fraction", type=common.fraction, default=MAX_FAILED_FRACTION,
                        help="a scheduled run in which more than this share of the tracks it tried failed ends "
                             "with exit status 3, a failed Kubernetes job (default: %(default)s)")
    parser.add_argument("--deadline-hours", type=float, default=24.0,
                        help="a scheduled run still going after this long is stopped (default: %(default)g)")
    parser.add_argument("--ha-storage-dir", type=common.gcs_uri,
                        help="Flink high availability: gs:// folder for the JobManager's recovery metadata "
                             "(default: none, a lost JobManager fails its job)")
    parser.add_argument("--render-dir", type=Path, help="where to write the filled-in manifests")
    parser.add_argument("--run-now", action="store_true", help="also start a run now")
    common.add_dry_run(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = args.render_dir or Path(tempfile.mkdtemp(prefix="beamsplitter-flink-"))
    rendered = render(folder, values(args))
    return common.execute(commands(args, rendered), args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
