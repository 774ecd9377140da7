"""The proof of issue 7: application-consistent snapshots restore to a database that starts with
every acknowledged transaction, for PostgreSQL and MariaDB, beside the same without the scripts.

Figures go to tests/output/databases/results.json and a table at the end of the run.
"""

from __future__ import annotations

import time

import pytest
from db_proof import PGBENCH_CLIENTS, PGBENCH_TPS, Experiment
from db_report import figures

pytestmark = pytest.mark.root

ROUNDS = 3  # snapshots per mode, alternating scripts / none under the same load
WARM_UP_SECONDS = 3.0
BETWEEN_SECONDS = 1.5


@pytest.mark.timeout(420)
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_restored_snapshots_start_with_every_acknowledged_transaction(
    kind, azurite, blob_disk_factory, tmp_path, record_proof
):
    experiment = Experiment(kind, azurite, blob_disk_factory, tmp_path)
    try:
        experiment.start_source()
        version = experiment.server_version()
        experiment.start_load()
        time.sleep(WARM_UP_SECONDS)
        for _round in range(ROUNDS):
            for mode in ("scripts", "none"):
                experiment.take(mode)
                time.sleep(BETWEEN_SECONDS)
        experiment.stop_load()
        experiment.measure_stalls()
        experiment.server.stop()
        for snapshot in experiment.snapshots:
            experiment.restore_and_check(snapshot)
    finally:
        experiment.close()
    load = "writer (acknowledged commits)" + (
        f" + pgbench -c {PGBENCH_CLIENTS} -R {PGBENCH_TPS}" if kind == "postgresql" else ""
    )
    record_proof(kind, figures(version, load, experiment.snapshots))

    scripted = [s for s in experiment.snapshots if s.mode == "scripts"]
    plain = [s for s in experiment.snapshots if s.mode == "none"]
    for snapshot in scripted:
        record = snapshot.as_dict()
        assert (snapshot.status_name, snapshot.consistency) == (
            "success_appconsistent",
            "application",
        ), record
        assert snapshot.quiesced_at is not None and snapshot.started <= snapshot.quiesced_at
        assert snapshot.quiesced_at <= snapshot.ended, record
        assert snapshot.rows_required > 0, record
        assert snapshot.passed, record
        if kind == "mariadb":
            # The lock was held across the snapshot and released by the post-script.
            assert snapshot.hold_ms is not None and snapshot.hold_ms > 0, record
    # The comparison exists: the same number of snapshots without scripts, each restored.
    assert [s.consistency for s in plain] == ["filesystem"] * ROUNDS
    assert all(s.restored for s in plain), [s.as_dict() for s in plain]
