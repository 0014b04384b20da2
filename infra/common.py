"""What the infra scripts share: versions, image-reference checks, and running or printing commands.

Standard library only: the scripts run with any python3, without the project's venv.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]

# One place for the versions every image, manifest and template must agree on.
BEAM_VERSION = "2.77.0"
PYTHON_VERSION = "3.11"
FLINK_VERSION = "1.19"  # of those Beam 2.77 publishes job servers for (1.19 to 2.2), the one tests/services.py runs

_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")


def pinned_image(ref: str) -> str:
    """``ref`` if it names one build of an image (a tag other than latest, or a digest); argparse type."""
    if not _IMAGE.match(ref) or ref.endswith(":latest"):
        raise argparse.ArgumentTypeError(
            f"{ref!r}: give an image with a version tag or digest (REGISTRY/NAME:TAG), not latest")
    return ref


def tagged_image(ref: str) -> str:
    """``ref`` if it names an image by a version tag (not latest, not a digest); argparse type.

    For the image a build tags and bakes in as its own reference (BEAMSPLITTER_IMAGE), and for
    the template that launches it: the launcher compares the two as written. The image repository
    keeps tags immutable (Terraform), so a tag names one build.
    """
    pinned_image(ref)
    if "@" in ref:
        raise argparse.ArgumentTypeError(f"{ref!r}: give the image by the tag it was built as, not by digest")
    return ref


def gcs_uri(value: str) -> str:
    """``value`` if it is a gs:// URI; argparse type."""
    if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", value):
        raise argparse.ArgumentTypeError(f"{value!r}: expected gs://BUCKET/PATH")
    return value


def fraction(value: str) -> float:
    """``value`` as a share from 0 to 1; argparse type."""
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a share from 0 to 1")
    return share


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands, one a line, and run none of them")


def execute(commands: Iterable[Sequence[str]], dry_run: bool, cwd: Path = REPO_ROOT) -> int:
    """Print each command (shell-quoted, one a line); unless ``dry_run``, run it and stop at the first failure."""
    for command in commands:
        line = shlex.join(command)
        if dry_run:
            print(line)
            continue
        print(f"+ {line}", file=sys.stderr, flush=True)
        status = subprocess.run(list(command), cwd=cwd).returncode
        if status:
            return status
    return 0


def main(parse: Callable[[list[str] | None], argparse.Namespace],
         commands: Callable[[argparse.Namespace], Iterable[Sequence[str]]], argv: list[str] | None = None) -> int:
    """A script's whole run: its arguments, then the commands they give, printed or executed."""
    args = parse(argv)
    return execute(commands(args), args.dry_run)
