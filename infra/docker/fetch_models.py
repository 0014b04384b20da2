"""Lay Spleeter checkpoints out for MODEL_PATH: DEST/<model_dir>/ (run at image build time).

    BEAMSPLITTER_CACHE=/models python fetch_models.py --dest /models 2stems 4stems 5stems

Each model is found the way beamsplitter finds it (MODEL_PATH, the cache, Spleeter's release
archives checked against their sha256, ...). With the cache set to DEST, downloads land in place;
a checkpoint found elsewhere is copied in. Prints one line per model with its sha256: the digest
every worker checks against the driver's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def fetch(names: list[str], dest: Path) -> dict[str, str]:
    """``{model_dir: sha256}`` of the checkpoints now under ``dest``."""
    from models.checkpoint import checkpoint_digest
    from models.config import load_config
    from models.provider import CHECKPOINT_FILES, resolve_checkpoint

    digests = {}
    for name in names:
        config = load_config(name if ":" in name or name.endswith(".json") else f"spleeter:{name}")
        target = dest / config.model_dir
        source = resolve_checkpoint(config)
        if source.resolve() != target.resolve():
            target.mkdir(parents=True, exist_ok=True)
            for file in CHECKPOINT_FILES:
                if (source / file).is_file():
                    shutil.copyfile(source / file, target / file)
        digests[config.model_dir] = checkpoint_digest(target)
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, required=True, help="folder to use as MODEL_PATH")
    parser.add_argument("models", nargs="*", help="2stems, 4stems, 5stems (or spleeter:NAME); none: nothing")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    for model_dir, digest in fetch(args.models, args.dest).items():
        print(f"{args.dest / model_dir}: sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
