"""An installed mailban needs no source tree: the wheel carries the shipped filters and actions."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stderr[-2000:]}")
    (path,) = out.glob("mailban-*.whl")
    return path


def test_wheel_ships_every_filter_and_action(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("filters.d", "actions.d"):
        for src in sorted((ROOT / kind).glob("*.toml")):
            assert f"mailban/{kind}/{src.name}" in names
    assert "mailban/default.toml" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_package_runs_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    """Unpack the wheel alone (no source tree on sys.path) and run `mailban test` from it."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    log = tmp_path / "mail.log"
    log.write_text("Nov 22 11:04:29 mail postfix/smtpd[1]: warning: unknown[198.51.100.9]: SASL PLAIN "
                   "authentication failed: (reason unavailable), sasl_username=alice@example.test\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from mailban.cli import main; sys.exit(main(sys.argv[2:]))",
                           str(site), "test", str(log), "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '"ip": "198.51.100.9"' in proc.stdout
    # The shipped files came from the unpacked package, not from a checkout.
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from mailban import config; print(config.shipped_dir('filters.d'))", str(site)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.stdout.strip() == str(site / "mailban" / "filters.d")


def test_wheel_carries_the_compiled_c_module(wheel: Path) -> None:
    # hatch_build.py compiles mailban/core/_speedups.c into the wheel, which is then tagged for
    # this interpreter and platform; the C source itself stays out.
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("mailban/core/_speedups") and n.endswith(".so")], names
    assert "mailban/core/_speedups.c" not in names
    assert "-py3-none-any" not in wheel.name
