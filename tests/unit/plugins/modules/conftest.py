"""Module main() tests run as on a managed host, even after a controller-side test (a filter
plugin's) imported ansible's controller code in the same pytest process: that import switches
module warnings from the result to the controller's display."""

from __future__ import annotations

import pytest
from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def _as_on_the_managed_host(monkeypatch):
    monkeypatch.setattr(_internal, "is_controller", False)
