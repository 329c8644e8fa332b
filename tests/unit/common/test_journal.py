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
