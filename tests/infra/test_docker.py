"""The worker images: Dockerfile structure, build commands, the entrypoint (run without Docker), baked checkpoints."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import common
from infra.docker import fetch_models
from models.checkpoint import checkpoint_digest
from tests.infra.conftest import INFRA, REPO, VENV_BIN, assert_separated, dry_run, flag, rejects

DOCKERFILE = INFRA / "docker" / "Dockerfile"
ENTRYPOINT = INFRA / "docker" / "entrypoint.sh"
IMAGE = "us-central1-docker.pkg.dev/proj/beamsplitter/beamsplitter:0.1.0-gpu"


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (the FROM line first)."""
    result, current = {}, None
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", rest, re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            current = match[2]
            result[current] = []
        result[current].append((keyword, rest))
    return result


def test_stages_start_from_pinned_beam_and_launcher_images():
    s = stages(DOCKERFILE)
    assert list(s) == ["launcher", "cpu", "gpu"]
    assert s["cpu"][0][1] == f"apache/beam_python{common.PYTHON_VERSION}_sdk:{common.BEAM_VERSION} AS cpu"
    assert s["gpu"][0][1] == "cpu AS gpu"
    launcher = s["launcher"][0][1].split()[0]
    assert launcher.startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
    assert common.pinned_image(launcher)
    assert [k for k, _ in s["launcher"]] == ["FROM"]  # only a source of the launcher binary


def test_versions_agree_with_the_project():
    assert importlib.metadata.version("apache-beam") == common.BEAM_VERSION
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == common.PYTHON_VERSION


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_each_image_is_a_worker_a_launcher_and_a_driver(stage):
    s = stages(DOCKERFILE)
    lines = s["cpu"] + (s["gpu"] if stage == "gpu" else [])
    entrypoints = [rest for keyword, rest in lines if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["/opt/beamsplitter/entrypoint.sh"]
    env = dict(rest.split("=", 1) for keyword, rest in lines if keyword == "ENV")
    assert env["MODEL_PATH"] == "/models"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/template/main.py"
    assert env["BEAMSPLITTER_IMAGE"] == "${IMAGE}"
    text = " ".join(rest for _, rest in lines)
    assert "/opt/google/dataflow/python_template_launcher" in text
    assert "apt-get install" in text and "ffmpeg" in text
    assert "fetch_models.py --dest /models" in text and "BEAMSPLITTER_CACHE=/models" in text
    assert "pip install --no-cache-dir ." in text


def test_gpu_image_adds_the_cuda_libraries_of_the_installed_tensorflow():
    gpu = " ".join(rest for _, rest in stages(DOCKERFILE)["gpu"])
    assert 'tensorflow[and-cuda]==$(python -c' in gpu and 'm.version("tensorflow")' in gpu
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in gpu
    requires = importlib.metadata.requires("tensorflow") or []
    assert any("and-cuda" in r and r.startswith("nvidia-cudnn") for r in requires)  # the extra exists


def test_every_copied_file_exists_and_is_in_the_build_context():
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    assert "*" in ignore
    copies = [rest for keyword, rest in instructions(DOCKERFILE) if keyword == "COPY" and "--from=" not in rest]
    assert copies
    for rest in copies:
        *sources, _ = [part for part in rest.split() if not part.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), source
            assert any(source == a or source.startswith(a.rstrip("/") + "/") or fnmatch.fnmatch(source, a)
                       for a in allowed), f"{source} is left out of the build context"
    copied = {Path(rest.split()[-2]).name for rest in copies if rest.split()[-1] in ("./", "/template/main.py")}
    assert {"entrypoint.sh", "fetch_models.py", "main.py"} <= copied


def test_build_with_docker_prints_build_and_push():
    build, push = dry_run("docker/build.py", "--variant", "gpu", "--image", IMAGE, "--push")
    assert build[:2] == ["docker", "build"] and build[-1] == "."
    assert flag(build, "-f") == "infra/docker/Dockerfile"
    assert flag(build, "--target") == "gpu"
    assert flag(build, "-t") == IMAGE
    assert build.count("--build-arg") == 2
    assert f"IMAGE={IMAGE}" in build and "MODELS=2stems 4stems 5stems" in build
    assert push == ["docker", "push", IMAGE]
    (only_build,) = dry_run("docker/build.py", "--variant", "cpu", "--image", IMAGE, "--models", "")
    assert "MODELS=" in only_build and flag(only_build, "--target") == "cpu"


def test_build_with_cloud_build_matches_cloudbuild_yaml():
    (submit,) = dry_run("docker/build.py", "--variant", "cpu", "--image", IMAGE, "--cloud-build",
                        "--project", "proj")
    assert submit[:3] == ["gcloud", "builds", "submit"] and submit[-1] == "."
    assert flag(submit, "--project") == "proj"
    config = yaml.safe_load((REPO / flag(submit, "--config")).read_text())
    substitutions = dict(item.split("=", 1) for item in flag(submit, "--substitutions").split(","))
    assert substitutions == {"_TARGET": "cpu", "_IMAGE": IMAGE, "_MODELS": "2stems 4stems 5stems"}
    assert set(substitutions) == set(config["substitutions"])
    (step,) = config["steps"]
    assert step["args"][:3] == ["build", "-f", "infra/docker/Dockerfile"] and "${_TARGET}" in step["args"]
    assert config["images"] == ["${_IMAGE}"]
    # one build, one tag: the pushed tag is the reference the image has of itself
    assert flag(step["args"], "-t") == "${_IMAGE}"
    assert [step["args"][i + 1] for i, a in enumerate(step["args"][:-1]) if a == "--build-arg"] == [
        "IMAGE=${_IMAGE}", "MODELS=${_MODELS}"]


def test_local_build_tags_the_image_with_its_own_reference():
    build, push = dry_run("docker/build.py", "--variant", "cpu", "--image", IMAGE, "--push")
    assert flag(build, "-t") == IMAGE and f"IMAGE={IMAGE}" in build and push[-1] == IMAGE
    # the Dockerfile turns that build argument into the variable the Flex Template entry reads
    for stage in ("cpu", "gpu"):
        lines = stages(DOCKERFILE)[stage]
        assert ("ARG", 'IMAGE=""') in lines and ("ENV", "BEAMSPLITTER_IMAGE=${IMAGE}") in lines
    assert 'environ.get("BEAMSPLITTER_IMAGE")' in (INFRA / "dataflow" / "main.py").read_text()


def test_build_refuses_unpinned_images_and_half_options():
    assert "not latest" in rejects("docker/build.py", "--variant", "cpu", "--image", "registry/beamsplitter:latest")
    assert "not latest" in rejects("docker/build.py", "--variant", "cpu", "--image", "registry/beamsplitter")
    assert "not by digest" in rejects("docker/build.py", "--variant", "cpu", "--image",
                                      "registry/beamsplitter@sha256:" + "a" * 64)
    assert "--project" in rejects("docker/build.py", "--variant", "cpu", "--image", IMAGE, "--cloud-build")


def test_entrypoint_is_valid_bash():
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n") and os.access(ENTRYPOINT, os.X_OK)
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def fake_boot(tmp_path) -> Path:
    """A stand-in for /opt/apache/beam/boot that prints its arguments."""
    boot = tmp_path / "boot"
    boot.write_text('#!/bin/sh\necho "boot $*"\n')
    boot.chmod(0o755)
    return boot


@pytest.mark.parametrize("args", [["--worker_pool"],
                                  ["--id=sdk-0-0", "--logging_endpoint=localhost:12370",
                                   "--control_endpoint=localhost:12371"],
                                  []])
def test_entrypoint_hands_worker_arguments_to_beam_boot(fake_boot, args):
    env = dict(os.environ, BEAM_BOOT=str(fake_boot), BEAMSPLITTER="/nonexistent/beamsplitter")
    result = subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == " ".join(["boot", *args]).strip()


def test_entrypoint_runs_beamsplitter_commands(fake_boot):
    env = dict(os.environ, BEAM_BOOT=str(fake_boot), BEAMSPLITTER=str(VENV_BIN / "beamsplitter"))
    result = subprocess.run(["bash", str(ENTRYPOINT), "run", "--help"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "boot" not in result.stdout and "--manifest" in result.stdout


@pytest.mark.slow  # a catalogue job
def test_entrypoint_runs_the_pipeline_on_the_local_runner(tmp_path, tiny_catalogue, checkpoint_2stems, fake_boot):
    """What the container does for `docker run IMAGE run ...`, with the image's programs replaced by this venv's."""
    prefix = tmp_path / "out"
    env = dict(os.environ, BEAM_BOOT=str(fake_boot), PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
               MODEL_PATH=str(checkpoint_2stems.parent))
    env.pop("BEAMSPLITTER", None)  # the default: `beamsplitter` from PATH, as in the image
    result = subprocess.run(["bash", str(ENTRYPOINT), "run", "--manifest", str(tiny_catalogue / "manifest.csv"),
                             "--output", str(prefix)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 tracks done, 0 skipped, 0 failed" in result.stdout
    assert_separated(prefix)


def test_fetch_models_lays_checkpoints_out_for_model_path(tmp_path, checkpoint_2stems, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(checkpoint_2stems.parent))
    dest = tmp_path / "models"
    assert fetch_models.main(["--dest", str(dest), "2stems"]) == 0
    assert sorted(p.name for p in (dest / "2stems").iterdir()) == ["checkpoint", "model.data-00000-of-00001",
                                                                    "model.index"]
    assert checkpoint_digest(dest / "2stems") == checkpoint_digest(checkpoint_2stems)
    # MODEL_PATH=dest now finds it, as in the image
    monkeypatch.setenv("MODEL_PATH", str(dest))
    assert fetch_models.fetch(["spleeter:2stems"], dest) == {"2stems": checkpoint_digest(checkpoint_2stems)}
    assert fetch_models.fetch([], dest) == {}
