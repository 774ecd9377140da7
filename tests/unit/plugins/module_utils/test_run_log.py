from __future__ import annotations

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._run_log import RunLog

SAS = "https://acct.blob.core.windows.net/c/disk.vhd?sv=2021-08-06&sp=rw&sig=fakeSig%3D"


def test_lines_are_written_as_they_come_and_redacted(tmp_path):
    log = RunLog(str(tmp_path / "logs"))
    log.info(f"opening {SAS}")
    text = (tmp_path / "logs" / "extension.log").read_text()
    assert "opening https://acct.blob.core.windows.net/c/disk.vhd" in text
    assert "fakeSig" not in text and "fakeSig" not in log.text()


def test_held_lines_reach_the_file_only_after_release(tmp_path):
    log = RunLog(str(tmp_path))
    log.info("before")
    log.hold()
    log.info("while frozen")
    assert "while frozen" not in (tmp_path / "extension.log").read_text()
    assert "while frozen" in log.text()
    log.release()
    lines = (tmp_path / "extension.log").read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["before", "while frozen"]


def test_unwritable_log_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = RunLog(str(blocker / "logs"))
    log.error("still recorded")
    assert "still recorded" in log.text()
    assert log.write_error and "cannot write" in log.write_error


def test_no_log_dir_keeps_lines_in_memory_only(tmp_path):
    log = RunLog(None)
    log.info("memory")
    assert log.text().endswith("memory\n")
    assert list(tmp_path.iterdir()) == []
