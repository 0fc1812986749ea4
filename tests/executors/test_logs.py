"""Run logs: notes written after the run's own writer is gone."""

import gzip
from pathlib import Path

from executors.logs import append_note


def test_a_note_after_settling_keeps_the_log_one_gzip_stream(tmp_path: Path) -> None:
    # the scheduler died between compressing a run's log and closing the run: recovery notes in the .gz
    packed = tmp_path / "output.log.gz"
    packed.write_bytes(gzip.compress(b"the task's last line, no newline"))
    append_note(packed, "run closed as LOST at restart", wall=lambda: 0.0)
    text = gzip.decompress(packed.read_bytes()).decode()
    assert text.startswith("the task's last line, no newline\n") and "run closed as LOST at restart" in text
