"""The execution environment definition: `ansible-builder create` makes a build context that holds
the controller's Python requirements, the system packages and the ansible-core floor that
meta/runtime.yml claims (no container is built here), and that floor is the one the versions stage
tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
META = ROOT / "meta"


def floor() -> str:
    runtime = yaml.safe_load((META / "runtime.yml").read_text())
    match = re.fullmatch(r">=(\d+\.\d+)\.\d+", runtime["requires_ansible"])
    assert match, runtime["requires_ansible"]
    return match.group(1)


def builder() -> str:
    found = shutil.which("ansible-builder", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("ansible-builder is missing: run scripts/bootstrap.sh (requirements/dev.txt)")
    return found


def test_ansible_builder_create_makes_a_context_with_every_requirement(tmp_path):
    context = tmp_path / "context"
    done = subprocess.run(
        [builder(), "create", "-f", str(META / "execution-environment.yml"), "-c", str(context)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    requirements = (context / "_build" / "requirements.txt").read_text()
    assert re.search(r"^azure-mgmt-compute\b", requirements, re.M)
    assert re.search(r"^azure-identity\b", requirements, re.M)
    bindep = (context / "_build" / "bindep.txt").read_text()
    assert re.search(r"^openssh-clients \[platform:rpm\]", bindep, re.M)
    containerfile = next(context.glob("[CD]*file")).read_text()
    assert f"ansible-core>={floor()}.0" in containerfile
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert galaxy["collections"][0]["name"].endswith("/appconsistent/vmsnapshot.git")


def test_every_claimed_minor_is_tested():
    """bootstrap.sh makes one venv per ansible-core minor from the floor up to the .venv's."""
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    pinned = re.search(r"for core in ([\d. ]+); do", bootstrap).group(1).split()
    minors = [tuple(int(n) for n in core.split(".")[:2]) for core in pinned]
    dev = (ROOT / "requirements" / "dev.txt").read_text()
    newest = tuple(int(n) for n in re.search(r"^ansible-core==(\d+)\.(\d+)", dev, re.M).groups())
    first = tuple(int(n) for n in floor().split("."))
    assert minors == [(first[0], minor) for minor in range(first[1], newest[1])]
