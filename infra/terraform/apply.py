#!/usr/bin/env python3
"""Create or update beamsplitter's Google Cloud resources with Terraform (this folder).

    python3 infra/terraform/apply.py --state-bucket MY-TF-STATE --var-file infra/terraform/terraform.tfvars
    ... --plan-only   stops after `terraform plan`
    ... --dry-run     prints the terraform commands instead of running them

The state bucket is made once by hand: gcloud storage buckets create gs://MY-TF-STATE --location REGION
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `infra`
from infra import common  # noqa: E402

HERE = Path(__file__).resolve().parent
PLAN_FILE = "beamsplitter.tfplan"


def commands(args) -> list[list[str]]:
    terraform = ["terraform", f"-chdir={HERE.relative_to(common.REPO_ROOT)}"]
    steps = [
        terraform + ["init", "-input=false", f"-backend-config=bucket={args.state_bucket}",
                     f"-backend-config=prefix={args.state_prefix}"],
        terraform + ["plan", "-input=false", f"-var-file={args.var_file.resolve()}", f"-out={PLAN_FILE}"],
    ]
    if not args.plan_only:
        steps.append(terraform + ["apply", "-input=false", PLAN_FILE])
    return steps


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-bucket", required=True, help="bucket of the Terraform state (name, no gs://)")
    parser.add_argument("--state-prefix", default="beamsplitter",
                        help="folder of the state in the bucket (default: %(default)s)")
    parser.add_argument("--var-file", type=Path, required=True, help="the variables, as terraform.tfvars.example")
    parser.add_argument("--plan-only", action="store_true", help="show the plan, change nothing")
    common.add_dry_run(parser)
    args = parser.parse_args(argv)
    if args.state_bucket.startswith("gs://"):
        parser.error("--state-bucket: the bucket's name, without gs://")
    if not args.var_file.is_file():
        parser.error(f"--var-file: {args.var_file}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    return common.main(parse, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
