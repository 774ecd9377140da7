"""A stopping signal's RunInterrupted, raised at any bytecode, passes `except Exception` on its way:
threading.Thread.start() interrupted after its thread began must not undo that thread."""

from __future__ import annotations

import sys
import threading

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    RunInterrupted,
)


def test_an_interrupted_thread_start_leaves_the_thread_running(monkeypatch):
    unraisable, done = [], threading.Event()
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    real_start = threading._start_new_thread

    def start_then_interrupted(function, args):
        real_start(function, args)
        raise RunInterrupted("SIGTERM")  # as the handler raises it, right after the thread began

    monkeypatch.setattr(threading, "_start_new_thread", start_then_interrupted)
    thread = threading.Thread(target=done.set, daemon=True)
    with pytest.raises(RunInterrupted):
        thread.start()
    monkeypatch.setattr(threading, "_start_new_thread", real_start)
    assert done.wait(5)
    thread.join(5)
    assert unraisable == []
