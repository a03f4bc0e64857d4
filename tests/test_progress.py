"""Progress on a terminal, silence when piped: `mailban test` and `replay` on a large log."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "mail.log"
    subprocess.run([sys.executable, str(ROOT / "bench" / "genlog.py"), "--lines", "80000", "--seed", "3",
                    "-o", str(path)], check=True, capture_output=True, timeout=120)
    assert path.stat().st_size > 8 << 20
    return path


def run_on_a_terminal(argv: list[str]) -> tuple[str, str]:
    """stdout piped, stderr a pseudo-terminal (as when an admin runs it and pipes the output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    return out, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command", [["test", "--jobs", "1"], ["test", "--jobs", "2"], ["replay"]])
def test_bar_on_a_terminal_and_clean_output(big_log: Path, command: list[str]) -> None:
    argv = [sys.executable, "-m", "mailban", command[0], str(big_log), *command[1:]]
    out, err = run_on_a_terminal(argv)
    assert "lines/s" in err and "ETA" in err and "%" in err
    assert "lines/s" not in out.split("\n")[0]  # the bar never goes to standard output
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert piped.stderr == ""  # not a terminal: no bar
    assert piped.stdout.splitlines()[0] == out.splitlines()[0]
