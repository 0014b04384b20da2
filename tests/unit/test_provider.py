"""Model sources: explicit folder or URI, MODEL_PATH, the cache, downloads verified and atomic."""

import functools
import gzip
import hashlib
import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zlib

import pytest

from models.checkpoint import random_weights, write_checkpoint
from models.config import load_config
from models.errors import ModelError
from models.provider import CONNECT_TIMEOUT_S, DIGESTS, DOWNLOAD_TIMEOUT_S, load_separator, resolve_checkpoint
from tests.conftest import REPO_ROOT

CONFIG = load_config("spleeter:4stems")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMSPLITTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """A folder holding a checkpoint archive, a corrupt one and one with a 3 GiB member."""
    root = tmp_path_factory.mktemp("www")
    write_checkpoint(root / "src" / "4stems", random_weights(CONFIG, seed=5))
    with tarfile.open(root / "4stems.tar.gz", "w:gz") as archive:
        for path in (root / "src" / "4stems").iterdir():
            archive.add(path, arcname=path.name)
    (root / "broken.tar.gz").write_bytes((root / "4stems.tar.gz").read_bytes()[:5000])
    write_bomb(root / "bomb.tar.gz", member_bytes=3 << 30)
    return root


@pytest.fixture(scope="module")
def served(www):
    """A loopback HTTP server over ``www``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def silent_host():
    """A loopback address that takes no connection: its listen queue is full, so the kernel drops the
    SYNs of a connect, as a firewall dropping packets to an unreachable host does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        with socket.create_connection(server.getsockname()):  # fills the queue; never accepted
            yield f"http://127.0.0.1:{server.getsockname()[1]}"


class SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Sends a file in 1 MiB blocks, 20 ms apart: a download that takes a while, as over a real link."""

    def copyfile(self, source, outputfile):
        while block := source.read(1 << 20):
            outputfile.write(block)
            outputfile.flush()
            time.sleep(0.02)

    def log_message(self, *args):
        pass


def write_bomb(path, member_bytes: int):
    """A checkpoint archive whose weights member holds ``member_bytes`` zeros, gzipped at level 1 as a
    quick tool would: 14 MB for 3 GiB. Written as gzip members of 1 MiB of zeros each (a gzip file may
    be several), so that making it compresses 1 MiB only."""
    def compressed(data: bytes) -> bytes:
        packer = zlib.compressobj(1, zlib.DEFLATED, 31)
        return packer.compress(data) + packer.flush()

    index = tarfile.TarInfo("bomb/model.index")
    index.size = 512
    weights = tarfile.TarInfo("bomb/model.data-00000-of-00001")
    weights.size = member_bytes
    head = index.tobuf() + bytes(512) + weights.tobuf()
    mebibyte = compressed(bytes(1 << 20))
    with open(path, "wb") as out:
        out.write(compressed(head))
        for _ in range(member_bytes >> 20):
            out.write(mebibyte)
        out.write(compressed(bytes(1024)))  # the archive's end: two blocks of zeros
    return path


def test_explicit_folder(tmp_path, cache):
    write_checkpoint(tmp_path / "mine", random_weights(CONFIG, seed=0))
    assert resolve_checkpoint(CONFIG, str(tmp_path / "mine")) == tmp_path / "mine"
    with pytest.raises(ModelError, match=f"{tmp_path}: not a Spleeter checkpoint folder"):
        resolve_checkpoint(CONFIG, str(tmp_path))


def test_model_path_then_cache(tmp_path, cache, monkeypatch):
    write_checkpoint(cache / "4stems", random_weights(CONFIG, seed=0))
    assert resolve_checkpoint(CONFIG) == cache / "4stems"
    write_checkpoint(tmp_path / "models" / "4stems", random_weights(CONFIG, seed=1))
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "models"))
    assert resolve_checkpoint(CONFIG) == tmp_path / "models" / "4stems"


def test_archive_uri_is_fetched_once_into_the_cache(cache, served):
    uri = f"{served}/4stems.tar.gz"
    folder = resolve_checkpoint(CONFIG, uri)
    assert folder.parent.parent == cache and (folder / "model.index").is_file()
    assert resolve_checkpoint(CONFIG, uri) == folder
    separator = load_separator("spleeter:4stems", uri)
    assert len(separator.checkpoint_sha256) == 64
    assert separator.model_id == f"spleeter:4stems@sha256:{separator.checkpoint_sha256}"


def test_folder_uri(cache, served):
    folder = resolve_checkpoint(CONFIG, f"{served}/src/4stems/")
    assert (folder / "model.data-00000-of-00001").is_file()


@pytest.mark.parametrize("name,cause", [("broken.tar.gz", "corrupt archive"), ("absent.tar.gz", "download failed")])
def test_bad_downloads_leave_nothing_behind(cache, served, name, cause):
    with pytest.raises(ModelError, match=cause):
        resolve_checkpoint(CONFIG, f"{served}/{name}")
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []


def test_no_source_at_all_is_one_clear_error(tmp_path, cache):
    params = dict(CONFIG.raw, model_dir="9stems")
    (tmp_path / "nine.json").write_text(json.dumps(params))
    with pytest.raises(ModelError) as raised:
        load_separator(str(tmp_path / "nine.json"))
    message = str(raised.value)
    assert message.startswith("no checkpoint for nine (9stems): pass --checkpoint, set MODEL_PATH")
    assert "only 2stems" in message and "\n" not in message


def test_an_archive_holding_a_3_gib_member_is_refused_in_bounded_memory(tmp_path, www, served):
    """A 14 MB archive with a 3 GiB member: refused at the member's header, in a separate process whose
    peak memory is measured, and nothing is published to the cache."""
    uri = f"{served}/bomb.tar.gz"
    assert 13_000_000 < (www / "bomb.tar.gz").stat().st_size < 15_000_000
    with gzip.open(www / "bomb.tar.gz") as unpacked, tarfile.open(fileobj=unpacked, mode="r|") as archive:
        assert [(m.name, m.size) for m in (archive.next(), archive.next())] == [
            ("bomb/model.index", 512), ("bomb/model.data-00000-of-00001", 3 << 30)]
    probe = (
        "import json, resource, sys\n"
        "from models.config import load_config\n"
        "from models.errors import ModelError\n"
        "from models.provider import resolve_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    resolve_checkpoint(load_config('spleeter:4stems'), sys.argv[1]); error = None\n"
        "except ModelError as exc:\n"
        "    error = str(exc)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'error': error, 'grew': (after - before) * 1024, 'peak': after * 1024}))\n")
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", probe, uri], capture_output=True, text=True, timeout=600,
                            cwd=REPO_ROOT, env={**os.environ, "BEAMSPLITTER_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == (f"{uri}: member bomb/model.data-00000-of-00001 holds 3072 MiB, over 1024 MiB, "
                                "the most a checkpoint file may hold; refused")
    assert outcome["grew"] < 256 << 20, outcome  # the old code read the member whole: 3 GiB more
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_cache_entry_altered_after_publishing_is_fetched_again(cache, served, caplog):
    uri = f"{served}/4stems.tar.gz"
    folder = resolve_checkpoint(CONFIG, uri)
    recorded = json.loads((folder / DIGESTS).read_text())
    assert sorted(recorded) == ["checkpoint", "model.data-00000-of-00001", "model.index"]
    weights = folder / "model.data-00000-of-00001"
    original = weights.read_bytes()
    with open(weights, "r+b") as f:  # one flipped byte, the size unchanged
        f.seek(1000)
        f.write(bytes([original[1000] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="models.provider"):
        assert resolve_checkpoint(CONFIG, uri) == folder
    assert weights.read_bytes() == original
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"cache entry {folder}: model.data-00000-of-00001 is not the file it was published "
                              "with (sha256 ")
    assert warning.endswith(f"; removed; fetching {uri} again")


def test_a_cache_entry_that_cannot_be_fetched_again_is_a_clear_error(tmp_path, cache):
    """A model no source has: the altered entry is removed, and the error says why it was not used."""
    params = dict(CONFIG.raw, model_dir="9stems")
    (tmp_path / "nine.json").write_text(json.dumps(params))
    config = load_config(str(tmp_path / "nine.json"))
    write_checkpoint(cache / "9stems", random_weights(CONFIG, seed=3))  # as an earlier version left it
    assert resolve_checkpoint(config) == cache / "9stems"
    assert (cache / "9stems" / DIGESTS).is_file()  # recorded on first use
    (cache / "9stems" / "model.index").write_bytes(b"junk")
    with pytest.raises(ModelError) as raised:
        resolve_checkpoint(config)
    message = str(raised.value)
    assert f"cache entry {cache / '9stems'}: model.index is not the file it was published with" in message
    assert "; removed; downloading failed: " in message and "\n" not in message
    assert not (cache / "9stems").exists()


def test_an_unreachable_source_is_given_up_in_seconds_and_the_next_one_fetched(tmp_path, www, cache, silent_host,
                                                                               monkeypatch, capfd):
    mirror = tmp_path / "mirror" / "v1.4.0"
    mirror.mkdir(parents=True)
    (mirror / "4stems.tar.gz").symlink_to(www / "4stems.tar.gz")
    archive = (www / "4stems.tar.gz").read_bytes()
    (mirror / "checksum.json").write_text(json.dumps({"4stems": hashlib.sha256(archive).hexdigest()}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SlowHandler, directory=str(mirror.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slow = f"http://127.0.0.1:{server.server_port}/v1.4.0"
    monkeypatch.setenv("BEAMSPLITTER_RELEASE_MIRRORS", f"{silent_host}/v1.4.0 {slow}/")
    started = time.monotonic()
    try:
        assert resolve_checkpoint(CONFIG) == cache / "4stems"
    finally:
        server.shutdown()
    # The connect timeout gave the silent host up, not the read timeout of a download that stalls.
    assert time.monotonic() - started < DOWNLOAD_TIMEOUT_S
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if line.startswith(("fetching", "gave"))]
    assert said == [
        f"fetching 4stems weights from {silent_host}/v1.4.0/4stems.tar.gz",
        f"gave that source up: {silent_host}/v1.4.0/checksum.json: download failed (no connection to 127.0.0.1 "
        f"within {CONNECT_TIMEOUT_S} s)",
        f"fetching 4stems weights from {slow}/4stems.tar.gz",
    ]
    # tqdm's bar: bytes so far of the total the server declared, up to all of them.
    total = f"{len(archive) / (1 << 20):.0f}M"
    bars = re.findall(r"4stems\.tar\.gz: +(\d+)%\|[^|]*\| *([\d.]+[kMG]?)/([\d.]+[kMG]?)", err)
    assert bars and bars[-1][0] == "100" and {bar[2] for bar in bars} == {total}, err[-2000:]
    assert (cache / "4stems" / DIGESTS).is_file()
