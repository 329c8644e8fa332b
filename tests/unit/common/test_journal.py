"""The write-ahead journal on its own: appends, commits that delete, what a dead process left."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from services.common import journal as journal_module
from services.common.journal import Journal


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def test_rows_stay_until_committed_then_go(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "t")
    for seq in range(1, 4):
        assert journal.append(seq, ("row", seq, 1.5, None, ["a", "b"]))
    [segment] = segments(tmp_path)
    assert segment.read_text().splitlines()[0] == '["row",1,1.5,null,["a","b"]]'
    journal.committed(2)
    assert len(segment.read_text().splitlines()) == 3  # row 3 is not committed: nothing goes yet
    journal.committed(3)
    assert segment.read_text() == ""  # caught up: emptied in place
    assert journal.append(4, ("row", 4))
    assert segment.read_text().splitlines() == ['["row",4]']


def test_full_segments_rotate_and_are_deleted_once_committed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 64)
    journal = Journal(tmp_path, "t")
    for seq in range(1, 21):
        journal.append(seq, ("x" * 20, seq))
    assert len(segments(tmp_path)) > 3
    journal.committed(10)
    left = segments(tmp_path)
    rows = [line for path in left for line in path.read_text().splitlines()]
    assert rows[-1] == f'["{"x" * 20}",20]' and len(rows) >= 10  # everything after 10 is still there


def test_the_disk_bound_refuses_rather_than_grows(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "t", max_bytes=100)
    assert journal.append(1, ("a" * 40,))
    assert journal.append(2, ("a" * 40,))
    assert not journal.append(3, ("a" * 40,))
    journal.committed(2)
    assert journal.append(3, ("a" * 40,))


def test_orphans_are_the_segments_of_dead_processes_only(tmp_path: Path) -> None:
    # A process that journaled two rows and was killed before committing them.
    code = (
        "import os, signal, sys; from pathlib import Path; from services.common.journal import Journal;"
        f"j = Journal(Path({str(tmp_path)!r}), 't'); j.append(1, ['a', 1]); j.append(2, ['b', 2]);"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3], check=False)
    live = Journal(tmp_path, "t")
    live.append(1, ["mine", 1])  # this process's own segment is never an orphan
    found = list(live.orphans())
    assert [rows for _, rows in found] == [[["a", 1], ["b", 2]]]
    Journal.discard(found[0][0])
    assert list(live.orphans()) == []
    assert len(segments(tmp_path)) == 1


def test_a_segment_locked_by_a_live_process_is_not_an_orphan(tmp_path: Path) -> None:
    other = tmp_path / "t.999999.1.jsonl"
    other.write_text('["x"]\n')
    fd = os.open(other, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a live writer holds its open segment
    try:
        assert list(Journal(tmp_path, "t").orphans()) == []
    finally:
        os.close(fd)
    assert [rows for _, rows in Journal(tmp_path, "t").orphans()] == [[["x"]]]


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "t.1.1.jsonl").write_text('["whole",1]\n["torn",')
    assert [rows for _, rows in Journal(tmp_path, "t").orphans()] == [[["whole", 1]]]


def test_a_pinned_segment_is_kept_until_released_then_found_for_replay(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "t")
    journal.append(1, ["queued", 1])
    journal.append(2, ["not queued", 2])
    journal.pin()
    journal.append(3, ["queued", 3])
    journal.committed(3)  # every queued row is in, but row 2 is only here: nothing is emptied
    assert journal.pinned and list(journal.orphans()) == []
    journal.release()
    assert journal.released and not journal.pinned
    assert [rows for _, rows in journal.orphans()] == [[["queued", 1], ["not queued", 2], ["queued", 3]]]
    journal.append(4, ["next", 4])  # a new segment of its own
    assert len(segments(tmp_path)) == 2


def test_close_keeps_or_deletes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "t")
    journal.append(1, ["a"])
    journal.close(keep=True)
    assert len(segments(tmp_path)) == 1
    journal = Journal(tmp_path, "u")
    journal.append(1, ["a"])
    journal.close(keep=False)
    assert [p.name.split(".")[0] for p in segments(tmp_path)] == ["t"]


def _unjournaled(journal: str, reason: str) -> float:
    return journal_module.UNJOURNALED.labels(journal, reason)._value.get()


def test_a_full_disk_refuses_the_row_counts_it_and_says_so_once(tmp_path: Path, monkeypatch, caplog) -> None:
    journal = Journal(tmp_path, "full")
    assert journal.append(1, ["before", 1])
    real_write = os.write

    def no_space(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    before = _unjournaled("full", "disk_full")
    monkeypatch.setattr(journal_module.os, "write", no_space)
    caplog.set_level("INFO", logger=journal_module.__name__)
    assert not any(journal.append(seq, ["during", seq]) for seq in range(2, 12))
    assert _unjournaled("full", "disk_full") - before == 10
    full = [r for r in caplog.records if "no space" in r.getMessage().lower()]
    assert len(full) == 1 and full[0].levelname == "ERROR"  # one line for the episode, not one per row
    monkeypatch.setattr(journal_module.os, "write", real_write)
    assert journal.append(12, ["after", 12])
    assert any("journaling again" in r.getMessage() for r in caplog.records)
    [segment] = segments(tmp_path)
    assert segment.read_text().splitlines() == ['["before",1]', '["after",12]']


def test_a_short_write_is_taken_back_so_the_next_row_is_not_torn(tmp_path: Path, monkeypatch) -> None:
    # A filesystem that runs out mid-row writes part of it and returns the count (no OSError).
    journal = Journal(tmp_path, "short")
    assert journal.append(1, ["whole", 1])
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write", lambda fd, data: real_write(fd, data[:5]))
    assert not journal.append(2, ["cut", 2])
    monkeypatch.setattr(journal_module.os, "write", real_write)
    assert journal.append(3, ["next", 3])
    journal.close(keep=True)
    assert [rows for _, rows in Journal(tmp_path, "short").orphans()] == [[["whole", 1], ["next", 3]]]


def test_a_segment_that_cannot_be_created_leaves_the_open_one_in_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 16)
    journal = Journal(tmp_path, "rot")
    assert journal.append(1, ["x" * 20, 1])  # the segment is full: the next row needs a new one
    real_open = os.open

    def no_space(path, flags, mode=0o777):  # noqa: ANN001, ANN202
        if "rot." in str(path):
            raise OSError(28, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(journal_module.os, "open", no_space)
    assert not journal.append(2, ["y", 2])
    assert not journal.append(3, ["y", 3])
    monkeypatch.setattr(journal_module.os, "open", real_open)
    assert journal.append(4, ["z", 4])
    journal.committed(4)  # each segment closed once: a double close would hit an fd reused meanwhile
    assert [p.read_text() for p in segments(tmp_path)] == [""]


def test_the_disk_bound_is_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "bound", max_bytes=10)
    before = _unjournaled("bound", "bound")
    assert not journal.append(1, ["a" * 20])
    assert _unjournaled("bound", "bound") - before == 1
