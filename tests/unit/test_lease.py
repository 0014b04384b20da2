"""The lease on a model's output: taken atomically, refused while live, free once its holder is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from transforms.catalogue import lease
from transforms.catalogue.lease import Lease, LeaseHeld


def write_lease(path, **fields):
    holder = {"run_id": "other-run", "host": "elsewhere.example", "pid": 1, "token": "t",
              "expires_at": time.time() + 600} | fields
    path.write_text(json.dumps(holder))


def test_a_live_lease_of_another_machine_is_refused_by_name(tmp_path):
    uri = tmp_path / "_LEASE.json"
    write_lease(uri)
    with pytest.raises(LeaseHeld, match=r"run other-run \(pid 1 on elsewhere.example\) is writing this output; "
                                        r"its lease runs until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"):
        with Lease(str(uri), "mine"):
            pass
    assert json.loads(uri.read_text())["run_id"] == "other-run"  # left alone


@pytest.mark.parametrize("stale", [
    {"expires_at": 0.0},  # its holder stopped renewing it
    "dead pid",  # a process of this machine that no longer exists
    "garbage",
])
def test_a_lease_whose_holder_is_gone_is_taken(tmp_path, stale):
    uri = tmp_path / "_LEASE.json"
    if stale == "garbage":
        uri.write_text("{\"run_id\": ")
    elif stale == "dead pid":
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True)
        import socket
        write_lease(uri, host=socket.gethostname(), pid=int(finished.stdout))
    else:
        write_lease(uri, **stale)
    with Lease(str(uri), "mine"):
        assert json.loads(uri.read_text())["run_id"] == "mine"
    assert not uri.exists()  # withdrawn at the end


def test_one_of_two_holders_at_once(tmp_path):
    uri = str(tmp_path / "out" / "_LEASE.json")
    with Lease(uri, "first"):
        with pytest.raises(LeaseHeld, match="run first"):
            with Lease(uri, "second"):
                pass
        assert json.loads(open(uri).read())["run_id"] == "first"  # the refused one took nothing away
    with Lease(uri, "second"):
        pass


def test_the_holder_renews_its_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "RENEW_SECONDS", 0.2)
    uri = tmp_path / "_LEASE.json"
    with Lease(str(uri), "mine"):
        first = json.loads(uri.read_text())["expires_at"]
        time.sleep(1.0)
        assert json.loads(uri.read_text())["expires_at"] > first


def test_a_holder_that_loses_its_lease_stops_before_its_next_wave(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "RENEW_SECONDS", 0.1)
    uri = tmp_path / "_LEASE.json"
    with Lease(str(uri), "mine") as held:
        held.check()
        write_lease(uri)  # another run took it over (after ours expired, say)
        time.sleep(0.5)
        with pytest.raises(LeaseHeld, match="this run's lease was lost: run other-run .* took it over"):
            held.check()
    assert json.loads(uri.read_text())["run_id"] == "other-run"  # not withdrawn: it is not ours


def test_without_hard_links_the_lease_is_created_exclusively(tmp_path, monkeypatch):
    def no_links(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(lease.os, "link", no_links)
    uri = tmp_path / "_LEASE.json"
    with Lease(str(uri), "first"):
        assert json.loads(uri.read_text())["run_id"] == "first"
        with pytest.raises(LeaseHeld, match="run first"):
            with Lease(str(uri), "second"):
                pass
    assert not list(tmp_path.iterdir())  # no temporary file left either
