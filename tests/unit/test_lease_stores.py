"""The lease on every store, raced by runs in processes of their own.

gs:// on fake-gcs-server and s3:// on moto's S3 server (both honour
preconditions, as the real stores do), and a local folder. Where a store must
answer a run late (a retried 429 or 503, a client paused with its request under
way), the run talks to it through ``held_writes``, which holds its uploads back
until the test lets them go.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import services
from tests.lease_taker import Taker

pytestmark = pytest.mark.slow  # runs in processes of their own racing for the lease on two store servers

ROUNDS = 20


@dataclass
class Store:
    """A store and the runs that race for leases on it: eight behind ``gate`` (none locally), one not."""

    name: str
    root: str
    gate: services.HeldWrites | None
    gated: list[Taker]
    direct: Taker
    s3: services.S3Server | None = None

    def lease(self, test: str) -> str:
        return f"{self.root}/{test}/stems/2stems-0123456789ab/_LEASE.json"

    def _bucket_key(self, uri: str) -> tuple[str, str]:
        return tuple(uri.split("://", 1)[1].split("/", 1))

    def read(self, uri: str) -> dict | None:
        """The lease's content as a reader finds it."""
        if self.name == "gs":
            from google.cloud import storage

            bucket, name = self._bucket_key(uri)
            blob = storage.Client.create_anonymous_client().bucket(bucket).get_blob(name)
            return json.loads(blob.download_as_bytes()) if blob else None
        if self.name == "s3":
            bucket, key = self._bucket_key(uri)
            try:
                return json.loads(self.s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
            except self.s3.client.exceptions.NoSuchKey:
                return None
        return json.loads(Path(uri).read_text()) if Path(uri).exists() else None

    def plant_expired(self, uri: str) -> None:
        """The lease of a run that died: its term over (by either lease format's reckoning)."""
        body = json.dumps({"run_id": "died", "host": "elsewhere.example", "pid": 1, "token": "dead", "seconds": 0,
                           "expires_at": 0}).encode()
        if self.name == "gs":
            from google.cloud import storage

            bucket, name = self._bucket_key(uri)
            blob = storage.Client.create_anonymous_client().bucket(bucket).blob(name)
            blob.metadata = {"lease": body.decode()}  # where the lease module reads the holder, with the generation
            blob.upload_from_string(body)
        elif self.name == "s3":
            bucket, key = self._bucket_key(uri)
            self.s3.client.put_object(Bucket=bucket, Key=key, Body=body)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(body)
            past = time.time() - 3600
            os.utime(uri, (past, past))
            return
        time.sleep(2.5)  # the store's clock goes past its term (its times are whole seconds)


@contextlib.contextmanager
def runs_on(name: str, root: str, gate: services.HeldWrites | None, make, **extra):
    """The store's takers, started at once: ``make(run_id, endpoint)`` starts one that talks to ``endpoint``."""
    takers = [make(f"run-{i}", gate.url if gate else None) for i in range(8)] + [make("direct", None)]
    try:
        for taker in takers:
            taker.ready()  # each imports Beam: a few seconds
        yield Store(name, root, gate, takers[:8], takers[8], **extra)
    finally:
        for taker in takers:  # all at once: each takes a moment to exit
            taker.process.send_signal(signal.SIGCONT)
            taker.process.stdin.close()
        for taker in takers:
            taker.close()


@pytest.fixture(scope="module")
def gs_store():
    with services.fake_gcs_server() as gcs, services.held_writes(gcs.host) as gate:
        def make(run_id, endpoint):
            return Taker(run_id, env={"STORAGE_EMULATOR_HOST": endpoint or gcs.host, "NO_GCE_CHECK": "true"})

        with runs_on("gs", gcs.url("leases").rstrip("/"), gate, make) as store:
            yield store


@pytest.fixture(scope="module")
def s3_store():
    with services.s3_server("leases") as s3, services.held_writes(s3.endpoint) as gate:
        with runs_on("s3", "s3://leases", gate, lambda run_id, endpoint: Taker(run_id, *s3.beam_options(endpoint)),
                     s3=s3) as store:
            yield store


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    with runs_on("local", str(tmp_path_factory.mktemp("leases")), None, lambda run_id, _: Taker(run_id)) as store:
        yield store


@pytest.fixture(params=["gs", "s3", "local"])
def store(request) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


def answers(takers: list[Taker], gate: services.HeldWrites | None) -> dict[Taker, tuple[str, str]]:
    """Every taker's answer to ``take``; writes held back are let go once one of them holds the lease."""
    found: dict[Taker, tuple[str, str]] = {}
    deadline = time.monotonic() + 300
    while len(found) < len(takers):
        for taker in takers:
            if taker not in found:
                with contextlib.suppress(queue.Empty):
                    found[taker] = taker.answer(timeout=0.05)
        if gate and any(word == "held" for word, _ in found.values()):
            gate.release()
        assert time.monotonic() < deadline, \
            f"no answer from {len(takers) - len(found)} takers (their writes held until one holds the lease)"
    assert all(word in ("held", "refused") for word, _ in found.values()), found
    return found


def one_holder(store: Store, uri: str, found: dict[Taker, tuple[str, str]]) -> Taker:
    """The one taker that holds the lease now (its check passes and the store holds its token); the others
    that thought they held it are released."""
    holders = [taker for taker, (word, _) in found.items() if word == "held"]
    confirmed = [taker for taker in holders if taker.ask("check")[0] == "ok"]
    assert len(confirmed) == 1, f"{len(confirmed)} runs hold the lease: {[t.run_id for t in confirmed]}"
    assert store.read(uri)["token"] == confirmed[0].token
    return confirmed[0]


def release_all(winner: Taker, found: dict[Taker, tuple[str, str]]) -> None:
    # The holder first: the others' withdrawals then find nothing of theirs to remove.
    assert winner.ask("release")[0] == "released"
    for taker, (word, _) in found.items():
        if word == "held" and taker is not winner:
            taker.ask("release")


def test_of_eight_runs_started_at_once_exactly_one_holds_the_lease(store):
    """20 times over; on object stores the writes of all but the first land only after it holds the lease."""
    uri = store.lease("eight")
    for _ in range(ROUNDS):
        if store.gate:
            store.gate.hold(letting=1)
        for taker in store.gated:
            taker.send(f"take {uri}")
        found = answers(store.gated, store.gate)
        release_all(one_holder(store, uri, found), found)
        assert store.read(uri) is None


def test_of_two_runs_taking_over_an_expired_lease_at_once_one_wins(store):
    uri = store.lease("expired")
    takers = store.gated[:2]
    for _ in range(3):
        store.plant_expired(uri)
        if store.gate:
            store.gate.hold(letting=1)
        for taker in takers:
            taker.send(f"take {uri}")
        found = answers(takers, store.gate)
        release_all(one_holder(store, uri, found), found)


@pytest.mark.parametrize("store", ["gs", "s3"], indirect=True)
def test_a_lease_written_after_another_run_took_it_is_refused(store):
    """Issue 17, 1: B read the lease before A's write landed, and B's own write lands after A holds it."""
    uri = store.lease("late")
    late, first = store.gated[0], store.direct
    store.gate.hold()
    late.send(f"take {uri}")
    store.gate.wait_held(1)  # late read no lease, and its write is under way
    assert first.ask(f"take {uri}")[0] == "held"
    store.gate.release()
    word, message = late.answer()
    assert word == "refused" and "run direct" in message, (word, message)
    assert first.ask("check") == ("ok", "")
    assert store.read(uri)["token"] == first.token
    assert first.ask("release")[0] == "released"


def test_a_run_that_lost_its_lease_renews_nothing(store):
    """A holder pauses past its term (its renewal under way, or its process stopped); another run takes the
    lease over; the paused renewal then lands, or not, but the lease stays the new holder's."""
    uri = store.lease("renewal")
    paused, newer = store.gated[0], store.direct
    assert paused.ask(f"take {uri} 2")[0] == "held"  # a term of 2 s, renewed every 0.5 s
    if store.gate:
        store.gate.hold()
        store.gate.wait_held(1)  # its next renewal is under way, and held
    else:
        paused.process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 60
    while newer.ask(f"take {uri}")[0] != "held":  # refused while the paused run's term lasts
        assert time.monotonic() < deadline, "the paused run's lease never expired"
        time.sleep(0.5)
    if store.gate:
        store.gate.release()
    else:
        paused.process.send_signal(signal.SIGCONT)
    word, message = paused.ask("check")
    assert word == "lost" and "run direct" in message, (word, message)
    assert newer.ask("check") == ("ok", "")
    assert store.read(uri)["token"] == newer.token
    assert newer.ask("release")[0] == "released"
