"""The lease on a model's output: taken atomically, refused while live, free once its holder is gone.

Races between runs on every store are in test_lease_stores.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lease_taker import Taker
from transforms.catalogue import lease
from transforms.catalogue.lease import Lease, LeaseHeld


def write_lease(path, age: float = 0.0, **fields):
    """Another run's lease, last renewed ``age`` seconds ago."""
    holder = {"run_id": "other-run", "host": "elsewhere.example", "boot_id": "another-boot", "pid_ns": 1, "pid": 1,
              "token": "t", "seconds": 600, "expires_at": time.time() + 600 - age} | fields
    Path(path).write_text(json.dumps(holder))
    renewed = time.time() - age
    os.utime(path, (renewed, renewed))


def this_system() -> dict:
    return {"host": socket.gethostname(), "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pid_ns": os.stat("/proc/self/ns/pid").st_ino}


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_a_live_lease_of_another_machine_is_refused_by_name(tmp_path):
    uri = tmp_path / "_LEASE.json"
    write_lease(uri)
    with pytest.raises(LeaseHeld, match=r"run other-run \(pid 1 on elsewhere.example\) is writing this output; "
                                        r"its lease runs until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"):
        with Lease(str(uri), "mine"):
            pass
    assert json.loads(uri.read_text())["run_id"] == "other-run"  # left alone


@pytest.mark.parametrize("stale", ["expired", "dead pid", "garbage"])
def test_a_lease_whose_holder_is_gone_is_taken(tmp_path, stale):
    uri = tmp_path / "_LEASE.json"
    if stale == "garbage":  # not a lease, not written for a term
        uri.write_text("{\"run_id\": ")
        os.utime(uri, (time.time() - 301, time.time() - 301))
    elif stale == "dead pid":  # a process of this very system that no longer exists
        write_lease(uri, **this_system(), pid=dead_pid())
    else:  # its holder stopped renewing it
        write_lease(uri, age=601)
    with Lease(str(uri), "mine"):
        assert json.loads(uri.read_text())["run_id"] == "mine"
    assert not uri.exists()  # withdrawn at the end


def test_what_is_not_a_lease_counts_as_one_for_a_term(tmp_path):
    """A lease of an earlier version (or anything else at its name), while it may still be renewed."""
    uri = tmp_path / "_LEASE.json"
    uri.write_text(json.dumps({"run_id": "older", "host": "elsewhere.example", "pid": 1, "token": "t",
                               "expires_at": time.time() + 300}))
    with pytest.raises(LeaseHeld, match="is not a lease this version reads .* counts as one until"):
        with Lease(str(uri), "mine"):
            pass


@pytest.mark.parametrize("elsewhere", [{"pid_ns": 4026531999}, {"boot_id": "before-the-reboot"}])
def test_a_pid_of_another_pid_namespace_or_boot_is_not_checked(tmp_path, elsewhere):
    """Issue 17, 2: the same host name, but the holder's PID is not one of this system's: only expiry counts."""
    uri = tmp_path / "_LEASE.json"
    write_lease(uri, **(this_system() | elsewhere), pid=dead_pid())
    with pytest.raises(LeaseHeld, match="run other-run"):
        with Lease(str(uri), "mine"):
            pass
    write_lease(uri, age=601, **(this_system() | elsewhere), pid=dead_pid())
    with Lease(str(uri), "mine"):  # once expired, it is free
        pass


def free_pid() -> int:
    """A PID that no process of this PID namespace has."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 100, pid_max // 2, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free PID")


def test_a_holder_in_its_own_pid_namespace_is_not_judged_dead(tmp_path):
    """Issue 17, 2: a run in a container of its own (same host name, one volume) holds the lease; its PID in its
    namespace is one that no process has out here, yet it is alive."""
    uri = str(tmp_path / "out" / "_LEASE.json")
    pid = free_pid()
    # In the new namespace the next PID is the one chosen; the shell forks the taker, which gets it.
    inside = ["unshare", *([] if os.geteuid() == 0 else ["--user", "--map-root-user"]), "--pid", "--fork",
              "--mount-proc", "sh", "-c", f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?', "sh"]
    holder = Taker("contained", wrap=inside).ready()
    try:
        assert holder.ask(f"take {uri}")[0] == "held"
        assert json.loads(Path(uri).read_text())["pid"] == pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # out here no such process
        with pytest.raises(LeaseHeld, match=rf"run contained \(pid {pid} on {socket.gethostname()}\)"):
            with Lease(uri, "outside"):
                pass
        assert holder.ask("check") == ("ok", "")
    finally:
        holder.close()


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
        first = uri.stat().st_mtime_ns
        time.sleep(1.0)
        assert uri.stat().st_mtime_ns > first


def test_a_holder_that_loses_its_lease_stops_before_its_next_commit(tmp_path):
    uri = tmp_path / "_LEASE.json"
    with Lease(str(uri), "mine") as held:
        held.check()
        lease.fence(str(uri), held.token)
        taken = tmp_path / "taken.json"
        write_lease(taken)
        os.replace(taken, uri)  # another run took it over (after ours expired, say)
        with pytest.raises(LeaseHeld, match="this run's lease was lost: run other-run .* took it over"):
            held.check()
        with pytest.raises(LeaseHeld, match="run other-run"):
            lease.fence(str(uri), held.token)
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
