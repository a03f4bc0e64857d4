"""Least privilege: the daemon runs as an unprivileged user with CAP_NET_ADMIN only (setpriv,
as the systemd drop-in contrib/systemd/unprivileged.conf does) and still bans in the kernel; the
control socket serves root, the daemon's user and control_group members, and refuses others
whatever the socket file's mode."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from mailban.control import request
from tests.netns import NEEDS_ROOT, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = [*NEEDS_ROOT, pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is missing")]
ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may live under /root (mode 0700)


@pytest.fixture()
def workdir() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp dirs are root-only)."""
    path = Path(f"/var/tmp/mailban-lp-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, gid: int, argv: list[str], caps: bool = False) -> list[str]:
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups" if uid != NOBODY else "--clear-groups"]
    if caps:
        prefix += ["--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin"]
    else:
        prefix += ["--inh-caps=-all", "--bounding-set=-all"]
    return prefix + ["--no-new-privs", "--"] + argv


DEPENDENCIES = ("inotify_simple", "pyparsing", "nftables", "sdnotify", "tomli", "prometheus_client")


def pythonpath(workdir: Path) -> str:
    """A copy of mailban (with its shipped filters and actions) and its dependencies that the
    unprivileged users can read: the checkout and the venv may sit under a root-only directory
    (a CI clone in `mktemp -d`, a venv interpreter under /root)."""
    target = workdir / "py"
    if not target.exists():
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "mailban", target / "mailban", ignore=ignore)
        for kind in ("filters.d", "actions.d"):
            shutil.copytree(ROOT / kind, target / kind)
        for name in DEPENDENCIES:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None, name
            origin = Path(spec.origin)
            if spec.submodule_search_locations:
                shutil.copytree(origin.parent, target / origin.parent.name, ignore=ignore)
                site = origin.parent.parent
            else:
                shutil.copy(origin, target / origin.name)
                site = origin.parent
            for helper in site.glob("*__mypyc*"):  # mypyc-compiled packages (tomli) need it
                if not (target / helper.name).exists():
                    shutil.copy(helper, target / helper.name)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    return str(target)


def test_daemon_bans_as_nobody_with_cap_net_admin_only(link: Link, workdir: Path) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("no system python3")
    log = workdir / "mail.log"
    log.write_bytes(b"")
    log.chmod(0o644)
    config = write_config(workdir / "cfg", [str(log)])
    text = config.read_text().replace("journal = false\n", 'journal = false\nsocket_mode = "0666"\nmetrics = ""\n')
    config.write_text(text)
    for path in [workdir / "cfg", *(workdir / "cfg").rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    env = {**os.environ, "PYTHONPATH": pythonpath(workdir)}
    out = open(workdir / "daemon.out", "wb")
    proc = subprocess.Popen(link.exec_argv(link.srv, as_user(NOBODY, NOBODY, [SYSTEM_PYTHON, "-m", "mailban", "run",
                                                                                "--config", str(config)], caps=True)),
                            stdout=out, stderr=subprocess.STDOUT, env=env)
    sock = str(workdir / "cfg" / "mailban.sock")
    try:
        wait_for(lambda: os.path.exists(sock) and request(sock, {"cmd": "status"}).get("ok"), timeout=20,
                 what=f"the unprivileged daemon:\n{(workdir / 'daemon.out').read_text(errors='replace')}")
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        assert fields["Uid"].split()[0] == str(NOBODY)
        assert int(fields["CapEff"], 16) == 1 << 12  # CAP_NET_ADMIN and nothing else
        assert int(fields["CapBnd"], 16) == 1 << 12
        append(log, failure_line("198.51.100.90") * 3)
        took = wait_for(lambda: "198.51.100.90" in link.nft_elements(), what="ban by the unprivileged daemon")
        print(f"unprivileged daemon: ban in the kernel set after {took * 1000:.0f} ms")
        # the socket file is 0666 here, yet another unprivileged user is refused by the daemon
        other = subprocess.run(as_user(2, 2, [SYSTEM_PYTHON, "-m", "mailban", "unban", "198.51.100.90",
                                              "--socket", sock]), capture_output=True, text=True, env=env, timeout=30)
        assert other.returncode != 0 and "permission denied" in other.stderr
        assert "198.51.100.90" in link.nft_elements()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()


def test_control_group_members_may_act_others_may_not(link: Link, workdir: Path) -> None:
    log = workdir / "mail.log"
    log.write_bytes(b"")
    config = write_config(workdir / "cfg", [str(log)])
    config.write_text(config.read_text().replace("journal = false\n", 'journal = false\ncontrol_group = "daemon"\n'))
    daemon = Daemon(link, config).start()
    try:
        st = os.stat(daemon.socket)
        assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == 1  # group daemon
        os.chmod(workdir / "cfg", 0o755)
        env = {**os.environ, "PYTHONPATH": pythonpath(workdir)}
        member = subprocess.run(as_user(1, 1, [SYSTEM_PYTHON, "-m", "mailban", "ban", "198.51.100.91", "--for", "1m",
                                               "--socket", daemon.socket]), capture_output=True, text=True, env=env, timeout=30)
        assert member.returncode == 0, member.stderr
        stranger = subprocess.run(as_user(2, 2, [SYSTEM_PYTHON, "-m", "mailban", "status", "--socket", daemon.socket]),
                                  capture_output=True, text=True, env=env, timeout=30)
        assert stranger.returncode != 0  # not in the group: the socket file itself is closed to it
        wait_for(lambda: "198.51.100.91" in link.nft_elements(), what="ban by a control_group member")
        log_text = daemon.log()
        assert "control: ban requested by uid 1" in log_text
    finally:
        daemon.stop()
