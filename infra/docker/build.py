#!/usr/bin/env python3
"""Build (and push) a beamsplitter worker image, with Docker here or with Cloud Build.

    python3 infra/docker/build.py --variant gpu --image REGION-docker.pkg.dev/PROJECT/REPO/beamsplitter:0.1.0-gpu --push
    python3 infra/docker/build.py --variant cpu --image ...:0.1.0-cpu --cloud-build --project PROJECT
    ... --dry-run   prints the commands instead of running them

The build context is the repository root; --models picks the checkpoints baked in under /models.
--image is both the tag and the image's own reference (BEAMSPLITTER_IMAGE), so one build, one tag:
as the Flex Template's image it launches jobs whose workers run that same tag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `infra`
from infra import common  # noqa: E402

DOCKERFILE = "infra/docker/Dockerfile"
CLOUDBUILD = "infra/docker/cloudbuild.yaml"
DEFAULT_MODELS = "2stems 4stems 5stems"


def commands(args) -> list[list[str]]:
    if args.cloud_build:
        substitutions = f"_TARGET={args.variant},_IMAGE={args.image},_MODELS={args.models}"
        return [["gcloud", "builds", "submit", "--project", args.project, "--config", CLOUDBUILD,
                 "--substitutions", substitutions, "."]]
    build = ["docker", "build", "-f", DOCKERFILE, "--target", args.variant,
             "--build-arg", f"IMAGE={args.image}", "--build-arg", f"MODELS={args.models}",
             "-t", args.image, "."]
    return [build] + ([["docker", "push", args.image]] if args.push else [])


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("cpu", "gpu"), required=True)
    parser.add_argument("--image", type=common.tagged_image, required=True,
                        help="REGISTRY/NAME:TAG to build; the image knows itself by it")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help="checkpoints to bake in, space-separated; '' for none (default: %(default)s)")
    parser.add_argument("--push", action="store_true", help="push after a local build")
    parser.add_argument("--cloud-build", action="store_true", help="build and push with Cloud Build instead")
    parser.add_argument("--project", help="Google Cloud project (with --cloud-build)")
    common.add_dry_run(parser)
    args = parser.parse_args(argv)
    if args.cloud_build and not args.project:
        parser.error("--cloud-build needs --project")
    if "," in args.models:
        parser.error("--models: separate names with spaces")
    return args


def main(argv: list[str] | None = None) -> int:
    return common.main(parse, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
