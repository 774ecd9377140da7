# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.appconsistent.vmsnapshot.plugins.filter.fleet import FilterModule
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _consistency,
    _fleet,
    _prepost_apply,
)

F = FilterModule().filters()
SAS = "https://acct.blob.core.windows.net/disks/d{}.vhd?sv=2021&sig=SECRET{}%2B"
URIS = [SAS.format(0, 0), SAS.format(1, 1)]


@pytest.mark.parametrize(
    ("level", "required", "expected"),
    [
        ("application", "application", True),
        ("filesystem", "application", False),
        ("filesystem", "filesystem", True),
        ("crash", "filesystem", False),
        ("none", "none", True),
        (None, "crash", False),
    ],
)
def test_consistency_meets_follows_the_one_rank_table(level, required, expected):
    assert F["consistency_meets"](level, required) is expected


def test_rank_table_orders_the_levels():
    assert [
        F["consistency_rank"](level) for level in ("none", "crash", "filesystem", "application")
    ] == [0, 1, 2, 3]
    with pytest.raises(AnsibleFilterError, match="unknown consistency level"):
        F["consistency_rank"]("app")


@pytest.mark.parametrize(
    "shape",
    [URIS, ",".join(URIS), " , ".join(URIS) + ",", json.dumps(URIS), tuple(URIS)],
    ids=["list", "comma", "comma-spaces", "json", "tuple"],
)
def test_uri_list_accepts_every_shape(shape):
    assert F["uri_list"](shape) == URIS


@pytest.mark.parametrize("empty", [None, "", "  ", [], "[]"])
def test_uri_list_of_nothing_is_empty(empty):
    assert F["uri_list"](empty) == []


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ('["' + URIS[0], "not a JSON list"),
        ({"a": URIS[0]}, "not a dict"),
        ([URIS[0], 5], r"snapshot_disks\[1\] must be a string"),
        (7, "not a int"),
    ],
)
def test_uri_list_errors_name_the_variable_never_the_value(shape, match):
    with pytest.raises(AnsibleFilterError, match=match) as caught:
        F["uri_list"](shape)
    assert "SECRET" not in str(caught.value) and "sig=" not in str(caught.value)
    assert "snapshot_disks" in str(caught.value)


def test_settings_dict_accepts_dict_and_json_string():
    settings = {"objectStr": "c2VjcmV0", "statusBlobUri": URIS[0]}
    assert F["settings_dict"](settings) == settings
    assert F["settings_dict"](json.dumps(settings)) == settings
    assert F["settings_dict"]("") == {}
    for bad in ("{not json " + URIS[0], "[1]", 3):
        with pytest.raises(AnsibleFilterError, match="snapshot_protected_settings") as caught:
            F["settings_dict"](bad)
        assert "SECRET" not in str(caught.value)


def _run(consistency="application", status_code=0, ok=(True, True), scripts=None, window="12.5"):
    return {
        "changed": True,
        "consistency": consistency,
        "status_code": status_code,
        "status_name": "success_appconsistent"
        if status_code == 0
        else "FailedRetryableSnapshotFailedNoNetwork",
        "message": "done" if all(ok) else "A disk snapshot failed.",
        "snapshots": [
            {
                "blob_url": f"https://acct.blob.core.windows.net/disks/d{i}.vhd",
                "snapshot": "2026-12-02T00:00:00.0000000Z" if good else None,
                "ok": good,
                "error": None
                if good
                else "HTTP 403 AuthenticationFailed: signature not valid in the time frame",
            }
            for i, good in enumerate(ok)
        ],
        "frozen_mounts": ["/mnt/a"],
        "thaw_forced": False,
        # Before ansible-core 2.19 a templated number can arrive as text.
        "timings": {"frozen_window_ms": window},
        "scripts": scripts or {},
        "status_file": "/var/lib/status.json",
    }


def test_host_result_carries_snapshot_ids_and_meets_policy():
    result = F["snapshot_host_result"](_run(), {}, "filesystem", False, "db1")
    assert result["ran"] and result["meets_policy"] and not result["failed"]
    assert result["snapshots_taken"] == 2
    assert result["frozen_window_ms"] == 12.5
    assert result["snapshots"][0]["snapshot_url"] == (
        "https://acct.blob.core.windows.net/disks/d0.vhd?snapshot=2026-12-02T00:00:00.0000000Z"
    )


def test_host_result_reason_has_the_real_disk_error():
    result = F["snapshot_host_result"](
        _run(consistency="none", status_code="76", ok=(True, False)), {}, "filesystem", False, "db1"
    )
    assert result["status_code"] == 76
    assert not result["meets_policy"]
    assert "disk 1: HTTP 403" in result["reason"]
    assert result["snapshots"][1]["snapshot_url"] is None


def test_host_result_flags_a_script_that_wrote_errors_but_exited_zero():
    scripts = {
        "pre": {
            "plugins": [
                {
                    "status_code": 0,
                    "script": {
                        "path": "/etc/azure/pre.sh",
                        "exit_code": 0,
                        "timed_out": False,
                        "stderr_tail": "ERROR 1045\n",
                    },
                }
            ]
        },
        "post": {
            "plugins": [
                {
                    "status_code": 300,
                    "script": {"path": "/etc/azure/post.sh", "exit_code": 3, "stderr_tail": ""},
                },
                {
                    "status_code": 0,
                    "script": {"path": "/etc/azure/ok.sh", "exit_code": 0, "stderr_tail": ""},
                },
                {
                    "status_code": 0,
                    "script": {
                        "path": "/etc/azure/chatty.sh",
                        "exit_code": 0,
                        "stderr_tail": "app quiesced",
                    },
                },
            ]
        },
    }
    notes = F["snapshot_host_result"](_run(scripts=scripts), {}, "filesystem")["script_notes"]
    assert [(n["phase"], n["path"], n["exit_code"], n["stderr_tail"]) for n in notes] == [
        ("pre", "/etc/azure/pre.sh", 0, "ERROR 1045"),
        ("post", "/etc/azure/post.sh", 3, ""),
    ]
    assert notes[1]["status_code"] == 300


def test_host_result_of_a_failure_and_of_a_skipped_run():
    failed = F["snapshot_host_result"](
        {}, {"message": "boom", "status_code": "None"}, "crash", False, "h"
    )
    assert failed["failed"] and not failed["ran"] and not failed["meets_policy"]
    assert failed["status_code"] is None and failed["reason"] == "boom"
    skipped = F["snapshot_host_result"]({"skipped": True}, {}, "crash", True, "h")
    assert not skipped["ran"] and skipped["check_mode"]


class _Hostvars(dict):
    """Like hostvars: a host without the fact raises on lookup."""


def test_snapshot_fleet_counts_and_lines():
    results = {
        "ok1": F["snapshot_host_result"](_run(), {}, "filesystem", False, "ok1"),
        "bad": F["snapshot_host_result"](
            _run("none", 76, (False, False)), {}, "filesystem", False, "bad"
        ),
    }
    hostvars = _Hostvars({host: {"snapshot_result": result} for host, result in results.items()})
    hostvars["gone"] = {}
    fleet = F["snapshot_fleet"](hostvars, ["ok1", "bad", "gone", "unknown"])
    assert fleet["total"] == 4 and fleet["ok"] == 1
    assert fleet["consistency"] == {"application": 1, "filesystem": 0, "crash": 0, "none": 3}
    assert [fleet["hosts"][h]["outcome"] for h in ("ok1", "bad", "gone")] == [
        "ok",
        "below filesystem",
        "no result",
    ]
    assert fleet["hosts"]["ok1"]["snapshots"][0]["snapshot_url"].endswith(
        "?snapshot=2026-12-02T00:00:00.0000000Z"
    )
    lines = F["snapshot_fleet_lines"](fleet)
    assert lines[0].split() == [
        "HOST",
        "CONSISTENCY",
        "CODE",
        "STATUS",
        "FROZEN_MS",
        "SNAPSHOTS",
        "OUTCOME",
    ]
    assert lines[1].split()[:5] == ["ok1", "application", "0", "success_appconsistent", "12.5"]
    assert any(line.startswith("  bad: ") and "HTTP 403" in line for line in lines)
    assert lines[-1] == "1 of 4 hosts ok; application 1, filesystem 0, crash 0, none 3"
    assert "sig=" not in json.dumps(fleet)


def test_preflight_fleet_and_lines():
    hostvars = {
        "a": {
            "snapshot_preflight": {
                "consistency": "application",
                "status_code": "0",
                "status_name": "success",
                "message": "ok",
            }
        },
        "b": {
            "snapshot_preflight": {
                "consistency": "filesystem",
                "status_code": 313,
                "status_name": "FailedPrepostPluginConfigNotFound",
                "message": "no config",
            }
        },
    }
    fleet = F["preflight_fleet"](hostvars, ["a", "b", "c"])
    assert fleet["total"] == 3 and fleet["application"] == 1
    assert fleet["hosts"]["a"]["status_code"] == 0
    assert fleet["hosts"]["c"]["message"].startswith("No result")
    lines = F["preflight_lines"](fleet)
    assert lines[2].split()[:3] == ["b", "filesystem", "313"]
    assert lines[-1] == "1 of 3 hosts would get an application-consistent snapshot"


def test_rank_table_has_one_home():
    # The filters and the prepost module read _consistency's table.
    assert _fleet.RANK is _consistency.RANK is _prepost_apply.RANK
    assert _consistency.RANK == {"none": 0, "crash": 1, "filesystem": 2, "application": 3}


def test_preflight_result_from_prepost_info_and_from_a_failure():
    info = {
        "changed": False,
        "configured": True,
        "consistency": "filesystem",
        "status_code": "306",  # text before ansible-core 2.19
        "status_name": "FailedPrepostPreScriptPermissionError",
        "status_aliases": ["x"],
        "message": "mode 0755",
    }
    result = F["preflight_result"](info, "filesystem")
    assert result == {
        "failed": False,
        "configured": True,
        "consistency": "filesystem",
        "status_code": 306,
        "status_name": "FailedPrepostPreScriptPermissionError",
        "status_aliases": ["x"],
        "message": "mode 0755",
        "meets_policy": True,
    }
    assert not F["preflight_result"](info, "application")["meets_policy"]
    failed = F["preflight_result"]({"failed": True, "msg": "no python"}, "none")
    assert failed["failed"] and not failed["meets_policy"]
    assert failed["consistency"] == "none" and failed["message"] == "no python"
    assert failed["status_code"] is None


def test_preflight_fleet_reads_the_fact_it_is_told():
    hostvars = {"a": {"configure_prepost_preflight": {"consistency": "application"}}}
    fleet = F["preflight_fleet"](hostvars, ["a"], "configure_prepost_preflight")
    assert fleet["application"] == 1
    assert F["preflight_fleet"](hostvars, ["a"])["application"] == 0


DISK_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/{}"


@pytest.mark.parametrize(
    "shape",
    [
        [DISK_ID.format("os"), {"id": DISK_ID.format("data")}],
        f"{DISK_ID.format('os')}, {DISK_ID.format('data')}",
        json.dumps([DISK_ID.format("os"), {"id": DISK_ID.format("data")}]),
    ],
    ids=["list", "comma", "json"],
)
def test_managed_disk_list_accepts_ids_and_dicts_in_every_shape(shape):
    assert F["managed_disk_list"](shape) == [
        {"id": DISK_ID.format("os")},
        {"id": DISK_ID.format("data")},
    ]


def test_managed_disk_list_gives_the_roles_defaults_to_entries_without_their_own():
    disks = [
        DISK_ID.format("os"),
        {
            "id": DISK_ID.format("data"),
            "snapshot_resource_group": "rg-own",
            "snapshot_name": "{disk}-own",
            "tags": {"tier": "data", "job": "mine"},
        },
    ]
    assert F["managed_disk_list"](disks, "rg-snap", "{disk}-{task_id}", {"job": "nightly"}) == [
        {
            "id": DISK_ID.format("os"),
            "snapshot_resource_group": "rg-snap",
            "snapshot_name": "{disk}-{task_id}",
            "tags": {"job": "nightly"},
        },
        {
            "id": DISK_ID.format("data"),
            "snapshot_resource_group": "rg-own",
            "snapshot_name": "{disk}-own",
            "tags": {"job": "mine", "tier": "data"},
        },
    ]
    assert F["managed_disk_list"]([], "rg", "n", {"a": "b"}) == []
    assert F["managed_disk_list"]("") == [] and F["managed_disk_list"](None) == []
    assert F["managed_disk_list"](f"{DISK_ID.format('os')},,") == [{"id": DISK_ID.format("os")}]


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ({"id": "x"}, r"snapshot_managed_disks must be a list of resource IDs or dicts"),
        (
            [{"name": "x"}],
            r"snapshot_managed_disks\[0\] must be a resource ID or a dict with an id",
        ),
        ([5], r"snapshot_managed_disks\[0\] must be a resource ID"),
        ([{"id": " "}], r"snapshot_managed_disks\[0\] must be a resource ID or a dict with an id"),
        (
            [{"id": "x", "snapshot_rg": "y"}],
            r"snapshot_managed_disks\[0\] has unknown keys snapshot_rg",
        ),
        ([{"id": "x", "tags": "a=b"}], r"snapshot_managed_disks\[0\].tags must be a dict"),
        ('["x"', "not a JSON list"),
    ],
)
def test_managed_disk_list_errors_name_the_variable(shape, match):
    with pytest.raises(AnsibleFilterError, match=match):
        F["managed_disk_list"](shape)
    with pytest.raises(AnsibleFilterError, match="snapshot_managed_snapshot_tags must be a dict"):
        F["managed_disk_list"]([], "", "", "a=b")


def test_host_result_and_summary_of_managed_disks_carry_resource_ids():
    run = _run()
    run["snapshots"] = [
        {
            "disk_id": DISK_ID.format("os"),
            "snapshot_id": DISK_ID.format("os").replace("/disks/", "/snapshots/") + "-t1",
            "ok": True,
            "error": None,
            "provisioning_state": "Succeeded",
        },
        {"disk_id": DISK_ID.format("data"), "snapshot_id": None, "ok": False, "error": "HTTP 409"},
    ]
    result = F["snapshot_host_result"](run, {}, "filesystem", False, "vm1")
    assert result["snapshots"][0] == {
        "disk_id": DISK_ID.format("os"),
        "snapshot_id": DISK_ID.format("os").replace("/disks/", "/snapshots/") + "-t1",
        "ok": True,
        "error": None,
    }
    assert "disk 1: HTTP 409" in result["reason"]
    row = F["snapshot_fleet"]({"vm1": {"snapshot_result": result}}, ["vm1"])["hosts"]["vm1"]
    assert row["snapshots"][0] == {
        "disk_id": DISK_ID.format("os"),
        "snapshot_id": DISK_ID.format("os").replace("/disks/", "/snapshots/") + "-t1",
        "ok": True,
    }
    assert (row["snapshots_taken"], row["snapshots_total"]) == (1, 2)


def test_configure_fleet_names_the_hosts_without_a_result():
    hostvars = {
        "a": {"configure_prepost_result": {"changed": "True", "consistency": "application",
                                           "status_code": "0", "status_name": "success",
                                           "message": "ok"}},
        "b": {"configure_prepost_result": {"changed": False, "consistency": "filesystem",
                                           "status_code": 306, "message": "mode"}},
        "c": {},
    }  # fmt: skip
    fleet = F["configure_fleet"](hostvars, ["a", "b", "c", "d"])
    assert [fleet["hosts"][h]["result"] for h in "abcd"] == [
        "changed",
        "ok",
        "no result",
        "no result",
    ]
    assert fleet["hosts"]["a"]["status_code"] == 0
    assert (fleet["total"], fleet["application"], fleet["no_result"]) == (4, 1, 2)
    assert F["configure_fleet_line"](fleet) == (
        "1 of 4 hosts would get an application-consistent snapshot; 2 gave no result: c, d."
    )
    whole = F["configure_fleet"](hostvars, ["a"])
    assert F["configure_fleet_line"](whole).endswith("; 0 gave no result.")
