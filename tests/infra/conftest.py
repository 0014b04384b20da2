"""Helpers for the infra tests: run a script with --dry-run, read YAML and HCL, a tiny catalogue."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

from pipeline import demo

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
VENV_BIN = Path(sys.executable).parent


def dry_run(script: str, *args: str) -> list[list[str]]:
    """Run ``infra/<script> --dry-run ARGS`` with the system's python3 (the scripts need no venv);
    returns the printed commands, each split as a shell would."""
    result = subprocess.run(["python3", str(INFRA / script), *args, "--dry-run"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, f"{script} --dry-run failed:\n{result.stderr}"
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def rejects(script: str, *args: str) -> str:
    """Run the script with bad arguments (and --dry-run); it must exit 2; returns its stderr."""
    result = subprocess.run(["python3", str(INFRA / script), *args, "--dry-run"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    return result.stderr


def flag(command: list[str], name: str) -> str:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``command`` (exactly one)."""
    values = [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == name]
    values += [arg.split("=", 1)[1] for arg in command if arg.startswith(name + "=")]
    assert len(values) == 1, f"{name} appears {len(values)} times in {shlex.join(command)}"
    return values[0]


def flags(command: list[str], name: str) -> list[str]:
    """Every value of a repeated ``--name VALUE`` flag."""
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == name]


def terraform_binary() -> str:
    """The terraform that scripts/test found or built (scripts/fetch-terraform)."""
    found = os.environ.get("BEAMSPLITTER_TERRAFORM") or shutil.which("terraform")
    if not found:
        found = subprocess.run([str(REPO / "scripts" / "fetch-terraform")], capture_output=True, text=True,
                               check=True).stdout.strip()
    return found


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_hcl(path: Path) -> dict:
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with open(path) as f:
        return hcl2.load(f, serialization_options=options)


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any connection this process tries beyond 127.0.0.1 (and any look-up of a name but localhost)."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    allowed = {"localhost", "127.0.0.1", "::1"}

    def getaddrinfo(host, *args, **kwargs):
        if host not in allowed and host is not None:
            raise OSError(f"test allows loopback only, not a look-up of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in allowed:
            raise OSError(f"test allows loopback only, not a connection to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory) -> Path:
    """``<folder>/manifest.csv`` (track_id,uri) over two 5 s synthetic tracks."""
    folder = tmp_path_factory.mktemp("tiny-catalogue")
    demo.make_track(folder / "a.wav", seconds=5.0, seed=1)
    demo.make_track(folder / "b.wav", seconds=5.0, seed=2)
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "uri"])
        writer.writerows([("album/a", "a.wav"), ("album/b", "b.wav")])
    return folder


def assert_separated(prefix: Path, track_ids=("album/a", "album/b")) -> None:
    """Stems and completion records of every track under ``prefix``, and the metadata dataset."""
    (model,) = (prefix / "stems").iterdir()
    assert model.name.startswith("2stems-")
    for track_id in track_ids:
        names = sorted(p.name for p in (model / track_id).iterdir())
        assert names == ["_SUCCESS.json", "accompaniment.wav", "vocals.wav"], (track_id, names)
    assert list((prefix / "metadata").rglob("*.parquet"))
