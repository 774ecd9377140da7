"""Fixtures of the database suite, and the proof's table at the end of the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from db_report import table

from harness.azurite import Azurite, start_azurite
from harness.blobdisk import blob_disk_factory

__all__ = ["blob_disk_factory"]  # the harness fixture, used by the tests here

RESULTS = Path(__file__).resolve().parents[1] / "output" / "databases" / "results.json"
_recorded: dict = {}  # what this session's proof runs found, per database


def pytest_terminal_summary(terminalreporter) -> None:
    if _recorded:
        terminalreporter.write_sep(
            "=", f"restore proof ({RESULTS.relative_to(RESULTS.parents[2])})"
        )
        terminalreporter.write_line(table(_recorded))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    """Azurite keeping everything in memory: with its default on-disk store it rewrites its
    whole metadata file every 5 s, and a database disk's thousands of page ranges make every
    write to it several times slower (30,000 page writes: 441 s on disk, 52 s in memory)."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"), in_memory=True)
    yield server
    server.stop()


@pytest.fixture
def record_proof() -> Callable[[str, dict], None]:
    """record_proof(database, figures): results.json holds this session's figures, all of them."""

    def record(database: str, figures: dict) -> None:
        _recorded[database] = figures
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(_recorded, indent=2) + "\n")

    return record
