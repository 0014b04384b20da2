"""One run at a time per model folder of an output prefix.

Two runs on one prefix (a scheduled run overlapping a manual one) would both
find the same tracks undone, both separate them, and each list their metadata
rows: every stem twice. So a run first takes the model folder's lease,
``stems/<model>/_LEASE.json``, and a second run refuses to start, naming the
first and when its lease runs out.

The holder renews its lease every ``RENEW_SECONDS`` while it runs and
withdraws it at the end. A run that died stops renewing, and its lease is free
once it expires, ``LEASE_SECONDS`` after its last renewal, or at once when its
holder was a process that no longer exists: one of this very system (same host
name, boot and PID namespace; a PID means nothing in another container or
after a reboot, and there only expiry counts).

Every change to the lease is conditional on the version that was read, so of
runs racing for it exactly one wins, however late the store answers:

* gs:// objects are created with ``ifGenerationMatch=0`` and renewed, taken
  over (once expired) and withdrawn with ``ifGenerationMatch=<generation
  read>``; s3:// objects likewise with ``If-None-Match: *`` and ``If-Match:
  <etag>`` (each write's content differs, so its etag does). Beam's
  filesystems cannot send preconditions: the lease goes through the stores'
  client libraries, configured as Beam's filesystems are (its S3 options,
  ``STORAGE_EMULATOR_HOST``, Google's default credentials).
* Local files are created by a hard link (``O_EXCL`` where the filesystem has
  none), which fails when a lease exists; an expired one is first renamed
  away, and put back if what was renamed is not the version judged expired
  (should a third run create a lease in that instant, the one renamed stays
  away, and its holder stops before its next commit, as below). The holder
  renews by touching its own file (its inode), so a holder that lost its lease
  renews nothing anyone else sees.

Expiry is judged by the store's clock: an object's last modification against
the time the store answered with (its ``Date``), so a client whose clock is
wrong neither takes a live lease nor keeps a dead one.

Fencing: a run that lost its lease (its holder paused beyond its term, and
another run took over) must not commit what it wrote meanwhile. Before each
metadata commit the pipeline's commit step, on whichever worker it runs,
confirms that the lease still holds the run's token with at least half its term
left (``fence``); otherwise it writes no commit marker, and the driver stops
with an error. The driver confirms it so too before each wave (``check``). The rows of that commit are listed again by a later run, as
those of a run that died are. A run taking over waits for the lease's expiry,
more than half a term after any commit step confirmed it.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass

from models.errors import BeamsplitterError
from transforms.catalogue import s3_clients, storage

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0
# Store times (HTTP Date, S3's Last-Modified) are whole seconds: a lease expires this much later.
CLOCK_RESOLUTION = 1.0


class LeaseHeld(BeamsplitterError):
    """Another run holds the output's lease."""

    stage = "lease"


class _Conflict(Exception):
    """A conditional write found another version of the lease than the one it was made against."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class _Holder:
    run_id: str
    host: str
    boot_id: str | None
    pid_ns: int | None
    pid: int
    token: str
    seconds: float  # the term: how long the lease lasts after each renewal

    @classmethod
    def this_process(cls, run_id: str, token: str) -> "_Holder":
        return cls(run_id, socket.gethostname(), _boot_id(), _pid_namespace(), os.getpid(), token, LEASE_SECONDS)

    def to_json(self, renewal: int = 0) -> bytes:
        # The renewal count makes each write's content, and so an S3 etag, differ from the last.
        return json.dumps({**asdict(self), "renewal": renewal}, indent=1).encode()

    @classmethod
    def of_json(cls, data: bytes) -> "_Holder | None":
        try:
            fields = json.loads(data)
            return cls(str(fields["run_id"]), str(fields["host"]), fields.get("boot_id"), fields.get("pid_ns"),
                       int(fields["pid"]), str(fields["token"]), float(fields["seconds"]))
        except (TypeError, KeyError, ValueError, AttributeError):
            return None  # not a lease (nor one of this version): taken over as an expired one

    def process_gone(self) -> bool:
        """Whether the holder was a process of this very system that no longer exists."""
        here = (socket.gethostname(), _boot_id(), _pid_namespace())
        if None in here or (self.host, self.boot_id, self.pid_ns) != here:
            return False  # another machine, boot or container: its PID says nothing here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


@dataclass(frozen=True)
class _Seen:
    """The lease as one read found it."""

    holder: _Holder | None  # None: something that is not a lease (of this version: an older one's counts)
    version: object  # what a conditional write is made against: generation, etag, inode and mtime
    renewed: float  # its last write, by the store's clock (seconds since the epoch)
    now: float  # when the store answered, by its clock

    @property
    def expires(self) -> float:
        # Anything else at the lease's name (an older version's lease) counts as a lease of the usual term.
        return self.renewed + (self.holder.seconds if self.holder else LEASE_SECONDS) + CLOCK_RESOLUTION

    def is_live(self) -> bool:
        return self.now < self.expires and not (self.holder and self.holder.process_gone())

    def until(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.expires, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _filesystem_options():
    """The options Beam's own filesystems are made with, on the driver and on workers alike (as in
    ``FileSystems.get_filesystem``)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.value_provider import RuntimeValueProvider

    return FileSystems._pipeline_options or RuntimeValueProvider.runtime_options or {}


def _http_time(value: str | None) -> float:
    # A store that sends no Date (none does) leaves only this machine's clock.
    return email.utils.parsedate_to_datetime(value).timestamp() if value else time.time()


class _GcsStore:
    """The lease object on Cloud Storage; holder fields also in its custom metadata, read with its generation."""

    def __init__(self, uri: str):
        from apache_beam.io.gcp import gcsio

        self.bucket, self.name = uri[len("gs://"):].split("/", 1)
        self.client = gcsio.GcsIO(pipeline_options=_filesystem_options()).client

    def read(self) -> _Seen | None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Through the client's own session: its JSON API wrappers do not give the response's Date.
        url = self.client._connection.build_api_url(
            f"/b/{self.bucket}/o/{urllib.parse.quote(self.name, safe='')}")

        def get():
            response = self.client._http.request("GET", url, timeout=60)
            if response.status_code >= 400 and response.status_code != 404:
                raise exceptions.from_http_response(response)  # retried when transient
            return response

        response = DEFAULT_RETRY(get)()
        if response.status_code == 404:
            return None
        found = response.json()
        holder = _Holder.of_json((found.get("metadata") or {}).get("lease", "").encode())
        updated = datetime.datetime.fromisoformat(found["updated"].replace("Z", "+00:00")).timestamp()
        return _Seen(holder, int(found["generation"]), updated, _http_time(response.headers.get("Date")))

    def _write(self, data: bytes, generation: int) -> int:
        from google.api_core import exceptions

        blob = self.client.bucket(self.bucket).blob(self.name)
        blob.metadata = {"lease": data.decode()}
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
        except exceptions.PreconditionFailed:
            raise _Conflict() from None
        return blob.generation

    def create(self, data: bytes) -> int:
        return self._write(data, 0)

    def replace(self, data: bytes, seen: _Seen) -> int:
        return self._write(data, seen.version)

    def renew(self, data: bytes, version: int) -> int:
        return self._write(data, version)

    def withdraw(self, version: int) -> None:
        from google.api_core import exceptions

        try:
            self.client.bucket(self.bucket).blob(self.name).delete(if_generation_match=version)
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            pass  # another run's by now


class _S3Store:
    """The lease object on S3, made with Beam's S3 options (endpoint, region, credentials)."""

    def __init__(self, uri: str):
        self.bucket, self.key = uri[len("s3://"):].split("/", 1)
        self.client = s3_clients.client(s3_clients.settings(_filesystem_options()))

    @staticmethod
    def _conflict(error) -> bool:
        # 409 ConditionalRequestConflict: another conditional write to the key was under way.
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)

    def read(self) -> _Seen | None:
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        holder = _Holder.of_json(found["Body"].read())
        now = _http_time(found["ResponseMetadata"]["HTTPHeaders"].get("date"))
        return _Seen(holder, found["ETag"], found["LastModified"].timestamp(), now)

    def _put(self, data: bytes, **condition) -> str:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                          ContentType="application/json", **condition)["ETag"]
        except self.client.exceptions.ClientError as error:
            if self._conflict(error):
                raise _Conflict() from None
            raise

    def create(self, data: bytes) -> str:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, seen: _Seen) -> str:
        return self._put(data, IfMatch=seen.version)

    def renew(self, data: bytes, version: str) -> str:
        return self._put(data, IfMatch=version)

    def withdraw(self, version: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
        except self.client.exceptions.ClientError as error:
            if self._conflict(error) or error.response.get("Error", {}).get("Code") == "NoSuchKey":
                return  # another run's by now
            # A store without conditional deletes: read, and delete what is still this very write.
            seen = self.read()
            if seen is not None and seen.version == version:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)


class _LocalStore:
    """The lease file; its version is its inode and modification time, its renewal a touch of that inode."""

    def __init__(self, path: str):
        self.path = path
        self._own: int | None = None  # a descriptor of the file this process created

    def read(self) -> _Seen | None:
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        return _Seen(_Holder.of_json(data), (stat.st_dev, stat.st_ino, stat.st_mtime_ns), stat.st_mtime,
                     time.time())

    def create(self, data: bytes) -> tuple:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Written under another name and linked into place: the lease appears whole or not at all. The
        # descriptor, kept, is of this very file, whatever is at the lease's name later.
        temp = f"{self.path}.{uuid.uuid4().hex}"
        own = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(own, data)
            try:
                os.link(temp, self.path)  # fails if the lease exists: the atomic create-if-absent
            except FileExistsError:
                raise _Conflict() from None
            except OSError:  # no hard links here (some network and FUSE filesystems)
                os.close(own)
                own = -1
                try:
                    own = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    raise _Conflict() from None
                os.write(own, data)
        except BaseException:
            if own >= 0:
                os.close(own)
            raise
        finally:
            os.unlink(temp)
        self._own = own
        stat = os.fstat(own)
        return stat.st_dev, stat.st_ino, stat.st_mtime_ns

    def replace(self, data: bytes, seen: _Seen) -> tuple:
        # Renamed away first: of runs taking over the same expired lease one rename moves it; the
        # others move nothing, or a lease written since, which they put back.
        moved = f"{self.path}.{uuid.uuid4().hex}.expired"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            raise _Conflict() from None
        stat = os.stat(moved)
        if (stat.st_dev, stat.st_ino, stat.st_mtime_ns) != seen.version:
            # Renewed or taken since it was read: not ours to remove. Should a run create a lease meanwhile,
            # the one moved stays away, and its holder finds its lease gone (see fence).
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
            except OSError:  # no hard links here
                if not os.path.exists(self.path):
                    os.rename(moved, self.path)
                    raise _Conflict() from None
            os.unlink(moved)
            raise _Conflict()
        os.unlink(moved)
        return self.create(data)

    def renew(self, data: bytes, version: tuple) -> tuple:
        os.utime(self._own)  # this process's own file, wherever it is now
        stat = os.fstat(self._own)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            raise _Conflict() from None
        if (current.st_dev, current.st_ino) != (stat.st_dev, stat.st_ino):
            raise _Conflict()
        return stat.st_dev, stat.st_ino, stat.st_mtime_ns

    def withdraw(self, version: tuple) -> None:
        try:
            current = os.stat(self.path)
            if (current.st_dev, current.st_ino) == version[:2]:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self._own is not None:
            os.close(self._own)
            self._own = None


def _store(uri: str):
    if storage.is_local(uri):
        return _LocalStore(uri)
    if uri.startswith("gs://"):
        return _GcsStore(uri)
    if uri.startswith("s3://"):
        return _S3Store(uri)
    raise storage.StorageError(f"{uri}: a lease needs a local folder, gs:// or s3:// (no conditional writes here)")


def _describe(holder: _Holder) -> str:
    return f"run {holder.run_id} (pid {holder.pid} on {holder.host})"


def _confirm(uri: str, seen: _Seen | None, token: str) -> None:
    """Raise ``LeaseHeld`` unless ``seen`` is the lease of ``token`` with at least half its term left."""
    if seen is None:
        raise LeaseHeld(f"{uri}: this run's lease is gone (withdrawn or removed)")
    if seen.holder is None or seen.holder.token != token:
        by = _describe(seen.holder) if seen.holder else "something that is not a lease"
        raise LeaseHeld(f"{uri}: this run's lease was lost: {by} took it over")
    if seen.expires - seen.now < seen.holder.seconds / 2:
        raise LeaseHeld(f"{uri}: this run's lease was not renewed in time (it runs until {seen.until()})")


def live_holder(uri: str) -> str | None:
    """The run id of the live lease at ``uri``; None when there is none, or it expired or its process died
    (a lease of an earlier version counts as live, run id unknown: "")."""
    seen = _store(uri).read()
    if seen is None or not seen.is_live():
        return None
    return seen.holder.run_id if seen.holder else ""


def fence(uri: str, token: str, store=None) -> None:
    """Before a commit (on any worker): raise ``LeaseHeld`` unless the run of ``token`` still holds the lease.

    Held with at least half its term left: no other run can take it over
    before that half has passed, and the commit lands long before.
    """
    try:
        seen = (store or _store(uri)).read()
    except Exception as exc:  # unconfirmed is not confirmed: no commit
        raise LeaseHeld(f"{uri}: cannot read the lease ({exc})") from None
    _confirm(uri, seen, token)


class Lease:
    """``with Lease(uri, run_id):`` holds the lease at ``uri`` for the block, or raises ``LeaseHeld``."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.token = uuid.uuid4().hex  # what workers check before committing (see fence)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost: str | None = None  # why this run no longer holds its lease
        self._version = None

    def __enter__(self) -> "Lease":
        self._store = _store(self.uri)
        self._holder = _Holder.this_process(self.run_id, self.token)
        self._renewals = 0
        seen = self._store.read()
        if seen is not None and seen.is_live():
            raise self._refusal(seen)
        try:
            data = self._holder.to_json()
            self._version = self._store.create(data) if seen is None else self._store.replace(data, seen)
        except _Conflict:
            # Another run's write came first; or a retried request of ours found its own first try landed.
            now = self._store.read()
            if now is None or now.holder is None or now.holder.token != self.token:
                raise self._refusal(now) from None
            self._version = now.version
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self._renewals += 1
                self._version = self._store.renew(self._holder.to_json(self._renewals), self._version)
            except _Conflict:
                now = self._store.read()
                if now is None or now.holder is None or now.holder.token != self.token:
                    self._lost = f"{_describe(now.holder)} took it over" if now and now.holder else "it was removed"
                    return
                self._version = now.version  # our own retried write had landed
            except Exception as exc:  # the run goes on while the lease is valid; check and fence tell
                log.warning("%s: cannot renew the lease (%s)", self.uri, exc)

    def check(self) -> None:
        """Raise ``LeaseHeld`` if this run no longer holds its lease; called before each wave."""
        try:
            if self._lost:
                raise LeaseHeld(f"{self.uri}: this run's lease was lost: {self._lost}")
            fence(self.uri, self.token, self._store)
        except LeaseHeld as lost:
            raise LeaseHeld(f"{lost}; stopping before the next metadata commit (what is written so far "
                            "stays, and the next run completes the catalogue)") from None

    def refused(self, commit: str) -> None:
        """Raise ``LeaseHeld``: a worker found the lease lost and did not commit ``commit``."""
        self.check()
        raise LeaseHeld(f"{self.uri}: this run's lease could not be confirmed before metadata commit {commit}, "
                        "which did not land; the next run lists its rows again")

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        try:
            self._store.withdraw(self._version)
        except Exception as exc:  # it expires on its own
            log.warning("%s: cannot withdraw the lease (%s); it expires %.0f s after its last renewal",
                        self.uri, exc, LEASE_SECONDS)

    def _refusal(self, seen: _Seen | None) -> LeaseHeld:
        if seen is None:
            return LeaseHeld(f"{self.uri}: another run took this output's lease at the same moment; "
                             "one run at a time writes a model's stems under a prefix")
        if seen.holder is None:
            return LeaseHeld(f"{self.uri} is not a lease this version reads (an earlier version's?); it counts as "
                             f"one until {seen.until()}, {LEASE_SECONDS:.0f} s after it was last written")
        return LeaseHeld(f"{self.uri}: {_describe(seen.holder)} is writing this output; its lease runs until "
                         f"{seen.until()} and is renewed while it runs (one run at a time per model under a prefix)")
