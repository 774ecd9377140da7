"""Fixtures of the fault suite: the figures, the application, a freeze meter, a fault proxy."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_support import App, Figures, FreezeMeter, clean_output

from harness.faultproxy import FaultProxy

# Every run of the suite needs root (loop devices, fsfreeze, chown) and these tools.
_MISSING = [tool for tool in ("fsfreeze", "losetup", "flock", "setsid") if not shutil.which(tool)]


def pytest_collection_modifyitems(config, items) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent != here:
            continue
        if os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="the fault suite needs root"))
        elif _MISSING:
            item.add_marker(pytest.mark.skip(reason=f"missing tools: {', '.join(_MISSING)}"))


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    clean_output()
    collected = Figures()
    yield collected
    collected.write()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    made = App(tmp_path / "app")
    yield made
    made.stop_helpers()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator:
    """Factory for an application with its own scripts: `make_app("name", pre_extra=...)`."""
    made: list[App] = []

    def make(name: str = "app", **kwargs) -> App:
        made.append(App(tmp_path / name, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.stop_helpers()


@pytest.fixture
def meter(loop_ext4) -> Iterator[FreezeMeter]:
    watching = FreezeMeter(loop_ext4.mount_point)
    yield watching
    watching.stop()


@pytest.fixture
def run_dirs(tmp_path: Path) -> dict:
    return {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs")}


@pytest.fixture
def proxy(azurite) -> Iterator[FaultProxy]:
    through = FaultProxy(azurite.host, azurite.port)
    yield through
    through.close()


@pytest.fixture
def proxied_disks(blob_disks, proxy):
    """Factory: `proxied_disks(2)` makes disks whose SAS URIs go through the fault proxy."""

    def make(count: int = 1, **kwargs):
        return [
            dataclasses.replace(disk, sas=proxy.url_for(disk.sas))
            for disk in blob_disks(count, **kwargs)
        ]

    return make
