"""The snapshot_restore module and the restore playbook against a real blob service (Azurite).

Each case checks what the blob service holds afterwards, read with azure-storage-blob (the
oracle), and that no SAS signature reaches the module's output.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from azure.core.exceptions import ResourceNotFoundError

from harness.modules import run_module, run_playbook

REPO = Path(__file__).resolve().parents[2]
SIZE = 64 * 1024
OLD, NEW = b"old disk content " * 64, b"new disk content " * 64


def signatures(*uris: str) -> set[str]:
    found = set()
    for uri in uris:
        value = re.search(r"sig=([^&]+)", uri).group(1)
        found |= {value, unquote(value)}
    return found


def assert_no_signature(output: str, uris: list[str]) -> None:
    for secret in signatures(*uris):
        assert secret not in output


@pytest.fixture
def disk(azurite):
    """A page blob with a snapshot of OLD, then overwritten with NEW."""
    container = azurite.create_container()
    azurite.create_page_blob("data.vhd", SIZE, OLD, container=container)
    blob = azurite.service.get_blob_client(container, "data.vhd")
    snapshot = blob.create_snapshot(metadata={"appconsistentLevel": "application"})["snapshot"]
    azurite.write_pages(container, "data.vhd", NEW)
    return container, snapshot


def content(azurite, container: str, name: str) -> bytes:
    return azurite.read_blob(container, name)[: len(OLD)]


def test_restore_into_a_new_blob_then_again_changes_nothing(azurite, disk):
    container, snapshot = disk
    args = {
        "snapshot_uri": azurite.blob_sas(container, "data.vhd", permissions="r", snapshot=snapshot),
        "destination_uri": azurite.blob_sas(container, "restored.vhd", permissions="rcw"),
    }
    uris = list(args.values())

    planned = run_module("snapshot_restore", args, check_mode=True)
    assert (planned["rc"], planned["action"], planned["changed"]) == (0, "create", True)
    with pytest.raises(ResourceNotFoundError):
        azurite.blob_properties(container, "restored.vhd")

    done = run_module("snapshot_restore", args)
    assert (done["rc"], done["action"], done["changed"]) == (0, "create", True), done
    assert content(azurite, container, "restored.vhd") == OLD
    properties = azurite.blob_properties(container, "restored.vhd")
    assert properties.blob_type == "PageBlob" and properties.size == SIZE
    assert {k.lower(): v for k, v in properties.metadata.items()} == {
        "appconsistentlevel": "application"
    }
    assert done["consistency"] == "application"
    assert done["source"].endswith(f"/data.vhd?snapshot={snapshot}")
    assert content(azurite, container, "data.vhd") == NEW  # the disk itself is untouched

    for check_mode in (False, True):
        again = run_module("snapshot_restore", args, check_mode=check_mode)
        assert (again["action"], again["changed"], again["copy_id"]) == (
            "none",
            False,
            done["copy_id"],
        )
    for result in (planned, done, again):
        assert_no_signature(json.dumps(result), uris)


def test_a_snapshot_sas_token_with_the_snapshot_option_reads_the_snapshot(azurite, disk):
    """The SDKs sign a snapshot SAS as a token; the URI of the base blob with that token and the
    snapshot option is enough."""
    container, snapshot = disk
    uri = azurite.blob_sas(container, "data.vhd", permissions="r", snapshot=snapshot)
    base, query = uri.split("?", 1)
    token = "&".join(part for part in query.split("&") if not part.startswith("snapshot="))
    args = {
        "snapshot_uri": f"{base}?{token}",
        "snapshot": snapshot,
        "destination_uri": azurite.blob_sas(container, "from-token.vhd", permissions="rcw"),
    }
    done = run_module("snapshot_restore", args)
    assert (done.get("rc"), done.get("action")) == (0, "create"), done
    assert content(azurite, container, "from-token.vhd") == OLD
    assert_no_signature(json.dumps(done), [args["snapshot_uri"], args["destination_uri"]])


def test_an_existing_blob_is_replaced_only_with_overwrite(azurite, disk):
    container, snapshot = disk
    azurite.create_page_blob("other.vhd", SIZE, NEW, container=container)
    args = {
        "snapshot_uri": azurite.blob_sas(container, "data.vhd", permissions="r", snapshot=snapshot),
        "destination_uri": azurite.blob_sas(container, "other.vhd"),
    }
    refused = run_module("snapshot_restore", args)
    assert refused.get("failed") and refused["status_code"] == 11
    assert "set overwrite" in refused["msg"]
    assert content(azurite, container, "other.vhd") == NEW

    replaced = run_module("snapshot_restore", {**args, "overwrite": True})
    assert (replaced["action"], replaced["changed"]) == ("overwrite", True)
    assert content(azurite, container, "other.vhd") == OLD

    # Written since the restore: no longer "holds the snapshot", so restored again. (Times have
    # one-second resolution: a write in the copy's own second would go unnoticed.)
    time.sleep(1.1)
    azurite.write_pages(container, "other.vhd", NEW)
    again = run_module("snapshot_restore", {**args, "overwrite": True})
    assert (again["action"], again["changed"]) == ("overwrite", True)
    assert again["copy_id"] != replaced["copy_id"]
    assert azurite.blob_properties(container, "other.vhd").copy.id == again["copy_id"]
    # Not the bytes: Azurite's copy of a page blob shares its page list with the snapshot, so
    # the write above changed the snapshot too (an Azurite bug; the blob service copies).


def test_restore_over_the_original_puts_the_disk_back_and_keeps_its_snapshots(azurite, disk):
    container, snapshot = disk
    result = run_module(
        "snapshot_restore",
        {
            "snapshot_uri": azurite.blob_sas(
                container, "data.vhd", permissions="r", snapshot=snapshot
            ),
            "destination_uri": azurite.blob_sas(container, "data.vhd"),
            "overwrite": True,
        },
    )
    assert (result["rc"], result["action"]) == (0, "overwrite"), result
    assert content(azurite, container, "data.vhd") == OLD
    assert [s["snapshot"] for s in azurite.list_snapshots(container, "data.vhd")] == [snapshot]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no such snapshot", "cannot be read"),
        ("bad source signature", "HTTP 403"),
        ("bad destination signature", "HTTP 403"),
        ("read-only destination", "a restore needs read (r) and write"),
        ("page blob over a block blob", "is a BlockBlob"),
    ],
)
def test_refusals_name_the_problem_change_nothing_and_show_no_signature(
    azurite, disk, case, expected
):
    container, snapshot = disk
    azurite.create_block_blob(container, "block.bin", b"block")
    source = azurite.blob_sas(container, "data.vhd", permissions="r", snapshot=snapshot)
    destination = azurite.blob_sas(container, "restored.vhd", permissions="rcw")
    if case == "no such snapshot":
        source = azurite.blob_sas(
            container, "data.vhd", permissions="r", snapshot="2020-01-01T00:00:00.0000000Z"
        )
    elif case == "bad source signature":
        source = re.sub(r"sig=(.)", lambda m: "sig=" + ("B" if m.group(1) != "B" else "C"), source)
    elif case == "bad destination signature":
        destination = azurite.blob_sas(container, "restored.vhd", bad_signature=True)
    elif case == "read-only destination":
        destination = azurite.blob_sas(container, "restored.vhd", permissions="r")
    else:
        destination = azurite.blob_sas(container, "block.bin")
    args = {"snapshot_uri": source, "destination_uri": destination, "overwrite": True}

    result = run_module("snapshot_restore", args)

    assert result.get("failed") and result["rc"] != 0, result
    assert expected in result["msg"] and result["msg"].endswith(".")
    assert "Traceback" not in result["stderr"]
    assert_no_signature(json.dumps(result), [source, destination])
    assert content(azurite, container, "data.vhd") == NEW
    with pytest.raises(ResourceNotFoundError):
        azurite.blob_properties(container, "restored.vhd")
    assert azurite.read_blob(container, "block.bin") == b"block"


def test_the_restore_playbook_restores_every_disk_once(azurite, disk):
    container, snapshot = disk
    azurite.create_page_blob("logs.vhd", SIZE, NEW, container=container)
    logs_snapshot = azurite.service.get_blob_client(container, "logs.vhd").create_snapshot()
    disks = [
        {
            "snapshot_uri": azurite.blob_sas(
                container, "data.vhd", permissions="r", snapshot=snapshot
            ),
            "destination_uri": azurite.blob_sas(container, "vm2-data.vhd", permissions="rcw"),
        },
        {
            "snapshot_uri": azurite.blob_sas(
                container, "logs.vhd", permissions="r", snapshot=logs_snapshot["snapshot"]
            ),
            "snapshot": logs_snapshot["snapshot"],
            "destination_uri": azurite.blob_sas(container, "vm2-logs.vhd", permissions="rcw"),
        },
    ]
    uris = [uri for item in disks for key, uri in item.items() if key.endswith("_uri")]
    playbook = str(REPO / "playbooks" / "restore.yml")
    runs = {}
    for name, options in (("check", ("--check",)), ("real", ()), ("again", ())):
        runs[name] = run_playbook(
            playbook, extra_vars={"restore_disks": disks}, options=("-c", "local", "-v", *options)
        )
        assert runs[name].returncode == 0, runs[name].stdout + runs[name].stderr
        assert_no_signature(runs[name].stdout + runs[name].stderr, uris)

    assert "changed=1" in runs["check"].stdout and "(create)" in runs["check"].stdout
    assert "changed=1" in runs["real"].stdout
    assert "changed=0" in runs["again"].stdout and "(none)" in runs["again"].stdout
    assert content(azurite, container, "vm2-data.vhd") == OLD
    assert azurite.read_blob(container, "vm2-logs.vhd")[: len(NEW)] == NEW

    refused = run_playbook(playbook, extra_vars={"restore_disks": []}, options=("-c", "local"))
    assert refused.returncode != 0 and "restore_disks must be a list of at least one disk" in (
        refused.stdout + refused.stderr
    )
