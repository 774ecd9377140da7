"""Pre/post-script sets for the tests, written the way the role deploys them.

A ``ScriptSet`` is a pre-script, a post-script and their ``VMSnapshotScriptPluginConfig.json`` in
one directory (root's, 0700): the scripts root-owned 0700, the configuration 0600. Every script
of a set writes to the set's journal; ``entries()`` reads it back. For a namespace host,
``directory`` is the path seen from this machine (through ``/proc/<pid>/root``) and ``inside``
the same directory as the host sees it: the scripts and the configuration name ``inside``.

``write_prepost`` makes the plain set of the system tests (each script journals its phase, then
runs its body); the fault suite's ``App`` (tests/faults/fault_support.py) is a set whose scripts
hold and release an application's lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_NAME = "VMSnapshotScriptPluginConfig.json"


class ScriptSet:
    """Scripts ``pre`` and ``post`` (their text) and their configuration, in ``directory``."""

    def __init__(
        self,
        directory: Path,
        pre: str,
        post: str,
        *,
        params: tuple[list[str], list[str]] = ([], []),
        retries: int = 0,
        timeout: int = 30,
        continue_on_failure: bool = True,
        freeze: bool = True,
        inside: Path | None = None,
    ) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.dir = directory
        self.inside = inside or directory
        self.journal = directory / "journal"
        self.pre = directory / "pre-script.sh"
        self.post = directory / "post-script.sh"
        self.config_path = directory / CONFIG_NAME
        self.write_script(self.pre, pre)
        self.write_script(self.post, post)
        self.write_config(
            {
                "pluginName": "ScriptRunner",
                "preScriptLocation": str(self.inside / self.pre.name),
                "postScriptLocation": str(self.inside / self.post.name),
                "preScriptParams": params[0],
                "postScriptParams": params[1],
                "preScriptNoOfRetries": retries,
                "postScriptNoOfRetries": retries,
                "timeoutInSeconds": timeout,
                "continueBackupOnFailure": continue_on_failure,
                "fsFreezeEnabled": freeze,
            }
        )

    @staticmethod
    def write_script(path: Path, text: str, mode: int = 0o700) -> None:
        """Replace the script atomically (a new inode, as an editor or a package would)."""
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_text(text)
        temporary.chmod(mode)
        os.replace(temporary, path)

    def write_config(self, config: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(config).encode()
        self.config_path.write_bytes(data)
        self.config_path.chmod(0o600)

    @property
    def config_location(self) -> str:
        """The configuration's path as the module sees it."""
        return str(self.inside / CONFIG_NAME)

    def entries(self) -> list[str]:
        """The journal's first words, one a line (``pre``, ``post``; ``pre-start``, ...)."""
        if not self.journal.exists():
            return []
        return [line.split()[0] for line in self.journal.read_text().splitlines() if line]

    def count(self, entry: str) -> int:
        return self.entries().count(entry)


def write_prepost(
    directory: Path,
    *,
    pre: str = "exit 0",
    post: str = "exit 0",
    timeout: int = 30,
    continue_on_failure: bool = True,
    freeze: bool = True,
) -> ScriptSet:
    """The system tests' set: each script journals its phase (``pre``, ``post``), then runs
    its body."""
    journal = directory / "journal"
    return ScriptSet(
        directory,
        f'#!/bin/sh\necho pre >> "{journal}"\n{pre}\n',
        f'#!/bin/sh\necho post >> "{journal}"\n{post}\n',
        timeout=timeout,
        continue_on_failure=continue_on_failure,
        freeze=freeze,
    )
