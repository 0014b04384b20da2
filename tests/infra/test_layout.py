"""infra/ as a whole: the README's paths exist, every command-issuing script has --help and --dry-run."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.infra.conftest import INFRA, REPO

SCRIPTS = ["docker/build.py", "dataflow/template.py", "flink/deploy.py", "terraform/apply.py",
           "dataflow/cost_model.py", "docker/fetch_models.py"]
COMMAND_SCRIPTS = SCRIPTS[:4]  # those that run docker, gcloud, kubectl or terraform


def test_readme_paths_exist():
    text = (INFRA / "README.md").read_text()
    layout = text.split("```", 2)[1]
    folder = None
    for line in layout.splitlines()[2:]:
        match = re.match(r"^  (\s*)([\w./-]+(?:, [\w./-]+)*)\s", line + " ")
        if not match:
            continue
        names = match[2].split(", ")
        if names[0].endswith("/"):
            folder = names[0]
            assert (INFRA / folder).is_dir(), folder
            continue
        for name in names:
            path = INFRA / (folder or "") / name if match[1] else INFRA / name
            assert path.exists(), path
    for path in re.findall(r"\binfra/[\w./-]+\.(?:py|sh|yaml|json|tf|md|example)\b", text):
        assert (REPO / path).exists(), path


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_has_help_and_runs_with_python3_alone(script):
    """Outside the project's venv, from any folder (fetch_models.py imports the project only to fetch)."""
    path = INFRA / script
    if script in COMMAND_SCRIPTS:
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(["python3", str(path), "--help"], capture_output=True, text=True, env=env,
                            cwd="/", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("script", COMMAND_SCRIPTS)
def test_command_scripts_print_or_run_through_one_helper(script):
    text = (INFRA / script).read_text()
    assert "common.add_dry_run(" in text and ("common.execute(" in text or "common.main(" in text)
    assert "subprocess" not in text and "os.system" not in text
    assert os.access(INFRA / script, os.X_OK)
