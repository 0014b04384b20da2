"""Model sources: explicit folder or URI, MODEL_PATH, the cache, downloads verified and atomic."""

import functools
import http.server
import json
import tarfile
import threading

import pytest

from models.checkpoint import random_weights, write_checkpoint
from models.config import load_config
from models.errors import ModelError
from models.provider import load_separator, resolve_checkpoint

CONFIG = load_config("spleeter:4stems")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMSPLITTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback HTTP server over a folder holding a checkpoint archive and a corrupt one."""
    root = tmp_path_factory.mktemp("www")
    write_checkpoint(root / "src" / "4stems", random_weights(CONFIG, seed=5))
    with tarfile.open(root / "4stems.tar.gz", "w:gz") as archive:
        for path in (root / "src" / "4stems").iterdir():
            archive.add(path, arcname=path.name)
    (root / "broken.tar.gz").write_bytes((root / "4stems.tar.gz").read_bytes()[:5000])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


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
