"""Object storage through Beam's filesystems: local paths, gs:// and s3:// alike.

Every object is published whole: local files are written under a temporary
name and renamed; on object stores an upload only becomes visible once it is
complete. Readers therefore never see half a stem or half a record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models import decoding, encoding
from models.errors import AudioError, BeamsplitterError
from transforms.catalogue import s3_clients

COPY_BLOCK = 8 << 20

# "[[]" (literal_glob's "[") is a sound one-character class, though Python's re warns of nested
# sets; filtered once for the process (catch_warnings per call is not thread-safe).
warnings.filterwarnings("ignore", "Possible nested set", FutureWarning)
# Every process that reaches object storage imports this module (the driver, and SDK workers as they load the
# job's steps): there Beam's s3:// filesystem shares one boto3 client per settings.
s3_clients.install()


class StorageError(BeamsplitterError):
    stage = "write"


def is_local(uri: str) -> bool:
    return "://" not in uri


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if len(parts) > 1 else parts[0]


def fingerprint(uri: str) -> dict:
    """What identifies a version of a source: its size and modification time.

    The URI is taken literally: ``[ ] * ?`` are common in music file names
    (``Song [Live].mp3``), and a glob match would miss the file or stat another.
    """
    try:
        filesystem = FileSystems.get_filesystem(uri)
        if not filesystem.exists(uri):
            raise AudioError(f"{uri}: no such file")
        entry = filesystem.metadata(uri)
    except BeamsplitterError:
        raise
    except Exception as exc:  # Beam raises BeamIOError with per-path causes
        raise AudioError(f"{uri}: cannot stat ({_cause(exc)})") from None
    return {"size": int(entry.size_in_bytes), "mtime": float(entry.last_updated_in_seconds or 0.0)}


def literal_glob(text: str) -> str:
    """``text`` as a Beam glob that matches exactly itself.

    Beam's globs have no escape character, but a one-character class does the
    job: ``Song [Live]`` becomes ``Song [[]Live]``. Every listing under a
    user's prefix goes through this, so a prefix like ``out [2024]/`` is never
    read as a pattern.
    """
    return re.sub(r"([\[*?])", r"[\1]", text)


def find(folder: str, pattern: str) -> list[str]:
    """The files under the literal ``folder`` whose path below it matches ``pattern`` (``*``, ``**``, ``?``), sorted."""
    found = FileSystems.match([join(literal_glob(folder), pattern)])[0].metadata_list
    return sorted(m.path for m in found)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, naming ``uri``, when its object store cannot be reached at all.

    Without a network (or with a wrong endpoint) the Cloud Storage client
    retries for two minutes and then ends in a credentials or retry traceback;
    a plain connection attempt says the same thing at once.
    """
    if not uri.startswith("gs://"):
        return
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout).close()
    except OSError as exc:
        raise StorageError(f"{uri}: cannot reach Cloud Storage at {parts.hostname}:{port} "
                           f"({exc.strerror or exc}); is there a network?") from None


def exists(uri: str) -> bool:
    return FileSystems.exists(uri)


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri, compression_type="uncompressed") as f:
        return f.read()


def read_json(uri: str) -> dict | None:
    """The JSON object at ``uri``, or None if absent or unreadable (treated as not written)."""
    try:
        return json.loads(read_bytes(uri))
    except Exception:
        return None


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path holding ``uri``'s bytes (ffmpeg reads local files only)."""
    if is_local(uri):
        yield uri
        return
    handle, path = tempfile.mkstemp(prefix="beamsplitter-", suffix=os.path.splitext(uri)[1])
    try:
        with os.fdopen(handle, "wb") as out, FileSystems.open(uri, compression_type="uncompressed") as src:
            shutil.copyfileobj(src, out, COPY_BLOCK)
    except BeamsplitterError:
        os.unlink(path)
        raise
    except Exception as exc:
        os.unlink(path)
        raise AudioError(f"{uri}: cannot read ({_cause(exc)})") from None
    try:
        yield path
    finally:
        os.unlink(path)


def load_audio(uri: str, sample_rate: int) -> np.ndarray:
    """The whole of ``uri`` decoded as float32 ``[n_samples, 2]``; errors name ``uri``, not its local copy."""
    with local_copy(uri) as path:
        return np.concatenate(list(decoding.decode(path, sample_rate, name=uri)))


def publish_file(local_path: str, uri: str) -> None:
    """Copy a finished local file to ``uri`` in one step."""
    def copy(out):
        with open(local_path, "rb") as src:
            shutil.copyfileobj(src, out, COPY_BLOCK)

    _publish(uri, copy, "application/octet-stream")


def publish_bytes(data: bytes, uri: str, mime_type: str = "application/json") -> None:
    _publish(uri, lambda out: out.write(data), mime_type)


def _publish(uri: str, write, mime_type: str) -> None:
    """``write(file)`` the object's content so that ``uri`` appears complete or not at all."""
    try:
        if is_local(uri):
            os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
            temp = encoding.partial_path(uri)
            with open(temp, "wb") as out:
                write(out)
            os.replace(temp, uri)
        else:  # an object store shows an upload only once it is complete
            with FileSystems.create(uri, mime_type=mime_type) as out:
                write(out)
    except Exception as exc:
        raise StorageError(f"{uri}: cannot write ({_cause(exc)})") from None


def delete_partials(folder: str) -> None:
    """Remove temporary files that a killed attempt left in a local ``folder``.

    Object stores have none: an unfinished upload never becomes an object.
    """
    if is_local(folder) and os.path.isdir(folder):
        for name in os.listdir(folder):
            if encoding.is_partial(name):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    pass


def delete_files(uris: list[str]) -> None:
    """Delete the files ``uris``, each taken literally; absent ones are ignored."""
    present = [u for u in uris if FileSystems.exists(u)]
    if present:
        # Beam's local and GCS filesystems match what they are asked to delete as globs; S3's does not.
        FileSystems.delete([u if u.startswith("s3://") else literal_glob(u) for u in present])


def delete_tree(uri: str) -> None:
    """Remove the file or folder ``uri`` and everything under it, if it exists."""
    if is_local(uri):
        if os.path.isdir(uri):
            shutil.rmtree(uri)
        elif os.path.exists(uri):
            os.unlink(uri)
        return
    delete_files(([uri] if exists(uri) else []) + find(uri, "**"))


def delete_tree_up_to(uri: str, above: str) -> None:
    """``delete_tree(uri)``, then the local folders between it and ``above`` that it left empty."""
    delete_tree(uri)
    if is_local(uri):
        folder = os.path.dirname(os.path.abspath(uri))
        top = os.path.abspath(above)
        while folder.startswith(top + os.sep):
            try:
                os.rmdir(folder)
            except OSError:  # not empty: another run's, or a folder of the output
                break
            folder = os.path.dirname(folder)


def _cause(exc: Exception) -> str:
    causes = getattr(exc, "exception_details", None)
    if isinstance(causes, dict) and causes:
        exc = next(iter(causes.values()))
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
