"""One run at a time per model folder of an output prefix.

Two runs on one prefix (a scheduled run overlapping a manual one) would both
find the same tracks undone, both separate them, and each list their metadata
rows: every stem twice. So a run first takes the model folder's lease,
``stems/<model>/_LEASE.json``, and a second run refuses to start, naming the
first and when its lease runs out.

The holder renews its lease every ``RENEW_SECONDS`` while it runs and
withdraws it at the end; a run that died stops renewing, and its lease is
free once it expires, ``LEASE_SECONDS`` after its last renewal, or at once
when it was held by a process of this machine that no longer exists.

Taking a lease must be atomic. Locally it is: the lease is written under a
name of its own and hard-linked into place (O_EXCL where the filesystem has no
hard links), which fails when a lease exists; an expired one is first renamed
away, which only one run can do. Beam's filesystems have no create-if-absent
for object stores, whose reads are strongly consistent after a write (GCS,
S3): there the lease is written, then read back after ``SETTLE_SECONDS``; of
two runs that wrote it at once, only the one whose lease is still there goes
on. A holder that finds its lease taken (or cannot renew it) stops before its
next wave.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from models.errors import BeamsplitterError
from transforms.catalogue import storage

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0
SETTLE_SECONDS = 2.0


class LeaseHeld(BeamsplitterError):
    """Another run holds the output's lease."""

    stage = "lease"


@dataclass(frozen=True)
class _Holder:
    run_id: str
    host: str
    pid: int
    token: str
    expires_at: float  # seconds since the epoch

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def read(cls, uri: str) -> "_Holder | None":
        fields = storage.read_json(uri)
        try:
            return cls(str(fields["run_id"]), str(fields["host"]), int(fields["pid"]), str(fields["token"]),
                       float(fields["expires_at"]))
        except (TypeError, KeyError, ValueError):
            return None  # absent, or not a lease (a half-written local file cannot exist: see _create)

    def is_live(self) -> bool:
        if time.time() >= self.expires_at:
            return False
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False  # killed: no need to wait for its lease to run out
            except PermissionError:
                pass
        return True

    def until(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.expires_at, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class Lease:
    """``with Lease(uri, run_id):`` holds the lease at ``uri`` for the block, or raises ``LeaseHeld``."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost: str | None = None  # why this run no longer holds its lease

    def _holder(self) -> _Holder:
        return _Holder(self.run_id, socket.gethostname(), os.getpid(), self.token, time.time() + LEASE_SECONDS)

    def __enter__(self) -> "Lease":
        current = _Holder.read(self.uri)
        if current and current.is_live():
            raise self._refusal(current)
        if current or storage.exists(self.uri):  # expired, its run dead, or not a lease at all
            self._remove_stale(current)
        self._create()
        self._renewed = time.time()
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return self

    def _remove_stale(self, stale: "_Holder | None") -> None:
        if not storage.is_local(self.uri):
            storage.delete_files([self.uri])
            return
        # Renamed away first: of two runs taking over the same stale lease, one rename succeeds; the
        # other's finds nothing, or finds a live lease, and refuses rather than delete it.
        moved = f"{self.uri}.{self.token}.stale"
        try:
            os.rename(self.uri, moved)
        except FileNotFoundError:
            return
        taken = _Holder.read(moved)
        if taken and (stale is None or taken.token != stale.token) and taken.is_live():
            try:  # another run's fresh lease, taken between our read and the rename: put it back
                os.link(moved, self.uri)
            except FileExistsError:
                pass
            os.unlink(moved)
            raise self._refusal(taken)
        os.unlink(moved)

    def _create(self) -> None:
        data = self._holder().to_json()
        if storage.is_local(self.uri):
            os.makedirs(os.path.dirname(os.path.abspath(self.uri)), exist_ok=True)
            try:
                # Written under another name and linked into place: the lease appears whole or not at all.
                temp = f"{self.uri}.{self.token}"
                with open(temp, "wb") as out:
                    out.write(data)
                try:
                    os.link(temp, self.uri)  # fails if the lease exists: the atomic create-if-absent
                except FileExistsError:
                    raise
                except OSError:  # no hard links here (some network and FUSE filesystems)
                    with os.fdopen(os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY), "wb") as out:
                        out.write(data)
                finally:
                    os.unlink(temp)
            except FileExistsError:
                raise self._refusal(_Holder.read(self.uri)) from None
            return
        storage.publish_bytes(data, self.uri)
        time.sleep(SETTLE_SECONDS)
        current = _Holder.read(self.uri)
        if not current or current.token != self.token:
            raise self._refusal(current)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                current = _Holder.read(self.uri)
                if current is not None and current.token != self.token:
                    self._lost = f"run {current.run_id} (pid {current.pid} on {current.host}) took it over"
                    return
                storage.publish_bytes(self._holder().to_json(), self.uri)
            except Exception as exc:  # the run goes on while the lease is valid, and stops before its next wave
                log.warning("%s: cannot renew the lease (%s)", self.uri, exc)
                if time.time() > self._renewed + LEASE_SECONDS - RENEW_SECONDS:
                    self._lost = f"it could not be renewed ({exc})"
                    return
            else:
                self._renewed = time.time()

    def check(self) -> None:
        """Raise ``LeaseHeld`` if this run no longer holds its lease; called before each wave."""
        if self._lost:
            raise LeaseHeld(f"{self.uri}: this run's lease was lost: {self._lost}; stopping before the next "
                            "wave (what is written so far stays, and the next run completes the catalogue)")

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        current = _Holder.read(self.uri)
        if current and current.token == self.token:
            storage.delete_files([self.uri])

    def _refusal(self, holder: _Holder | None) -> LeaseHeld:
        if holder is None:
            return LeaseHeld(f"{self.uri}: another run took this output's lease at the same moment; "
                             "one run at a time writes a model's stems under a prefix")
        return LeaseHeld(f"{self.uri}: run {holder.run_id} (pid {holder.pid} on {holder.host}) is writing this "
                         f"output; its lease runs until {holder.until()} and is renewed while it runs "
                         "(one run at a time per model under a prefix)")
