"""Run the collection's modules for real: as a module process, or through ansible-playbook.

`run_module()` executes a module file the way Ansible's AnsiballZ wrapper finally does (a Python
process reading its arguments as JSON), which is quick enough to call hundreds of times;
`run_playbook()` runs a real `ansible-playbook` against localhost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / ".cache" / "collections"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
MODULE_PACKAGE = "ansible_collections.appconsistent.vmsnapshot.plugins.modules"


def module_command(name: str, args_file: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", f"{MODULE_PACKAGE}.{name}", args_file]


def module_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS), LANG="C.UTF-8")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # hosts write bytecode; so do our tests
    return env


def write_args(args: dict, directory: str, check_mode: bool = False) -> str:
    payload = dict(args, _ansible_check_mode=check_mode)
    fd, path = tempfile.mkstemp(prefix="module-args-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
    return path


def run_module(name: str, args: dict, *, check_mode: bool = False, timeout: float = 120) -> dict:
    """Run a module; return its JSON result, with `rc` and `stderr` added."""
    with tempfile.TemporaryDirectory() as directory:
        path = write_args(args, directory, check_mode)
        done = subprocess.run(
            module_command(name, path),
            capture_output=True,
            text=True,
            env=module_env(),
            timeout=timeout,
            check=False,
        )
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"module {name} printed no JSON (rc {done.returncode}):\n{done.stdout}\n{done.stderr}"
        ) from None
    result.update(rc=done.returncode, stderr=done.stderr)
    return result


def run_playbook(
    playbook: str,
    *,
    extra_vars: dict | None = None,
    inventory: str = "localhost,",
    options: tuple[str, ...] = (),
    env: dict | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ansible-playbook against localhost with the checkout's collection and venv Python."""
    command = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, playbook, *options]
    with tempfile.TemporaryDirectory() as directory:
        if extra_vars is not None:
            vars_file = Path(directory) / "extra-vars.json"
            vars_file.write_text(json.dumps(extra_vars))
            command += ["-e", f"@{vars_file}"]
        full_env = dict(
            os.environ,
            LANG="C.UTF-8",
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_HOST_KEY_CHECKING="0",
        )
        full_env.update(env or {})
        return subprocess.run(
            command, capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
