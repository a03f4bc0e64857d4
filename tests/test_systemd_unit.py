"""The shipped unit: Type=notify with a watchdog, restarts on failure, hardened; and systemd
itself accepts it (systemd-analyze verify, which needs no running systemd)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "mailban.service"


def settings() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_unit_is_notify_with_watchdog_and_hardening() -> None:
    s = settings()
    assert s["Type"] == "notify" and s["Restart"] == "on-failure" and s["WatchdogSec"]
    assert s["ExecReload"].endswith("-HUP $MAINPID")
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["PrivateTmp"] == "yes"
    assert "CAP_NET_ADMIN" in s["CapabilityBoundingSet"] and "CAP_SYS_ADMIN" not in s["CapabilityBoundingSet"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "mailban.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/sbin/mailban run", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [l for l in (proc.stdout + proc.stderr).splitlines() if "mailban.service" in l]
    assert proc.returncode == 0 and problems == [], proc.stdout + proc.stderr
