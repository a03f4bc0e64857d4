"""The Debian package (debian/): built with dpkg-buildpackage on Debian 12 (this machine) and in a
Debian 13 root, clean under lintian, installed with `apt-get install ./mailban_*.deb` into fresh
Debian 12 and 13 roots, where the command, `mailban check`, `man mailban`, `mailban test` and
`mailban replay` work; an upgrade to a rebuilt, higher version keeps the admin's
/etc/mailban/mailban.toml; the packaged daemon, started with the packaged unit's settings and the
unprivileged drop-in (user mailban, CAP_NET_ADMIN only), bans in a network namespace; and purge
leaves no file behind.

Roots: tests/debian_roots.py (cached once per machine under /var/cache/mailban-test/pkg-*, an
overlay per test). The package's dependencies come from Debian's mirror through apt inside the
roots, with the downloaded .debs kept for the next run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from mailban.control import request
from tests.debian_roots import APT, ENV, Fresh, ensure_root, run
from tests.netns import NEEDS_ROOT, Link, append, failure_line, wait_for

ROOT = Path(__file__).resolve().parent.parent
HOST_TOOLS = ["dpkg-buildpackage", "dh_python3", "lintian", "debootstrap"]
BUILD_PACKAGES = ["build-essential", "debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-all-dev", "python3-hatchling",
                  "lintian"]
UPGRADE = "+test1"  # the rebuilt package's version is the changelog's plus this
# What installing and purging a package changes in apt's and dpkg's own records and caches.
BOOKKEEPING = re.compile(r"^/(var/lib/(dpkg|apt|ucf)|var/cache/(apt|debconf|man|ldconfig)|var/log|etc/ld\.so\.cache"
                         r"|etc/(passwd|group|shadow|gshadow|subuid|subgid)-$|run/|tmp/)")
# What every real Debian system has and a minbase root lacks (else apt's autoremove keeps them
# because apt recommends them, or their scripts create /etc/hosts, and purge looks unclean).
BASE_PACKAGES = ["man-db", "ca-certificates", "netbase", "adduser"]

pytestmark = [*NEEDS_ROOT, pytest.mark.skipif(
    any(shutil.which(t, path=ENV["PATH"]) is None for t in HOST_TOOLS),
    reason=f"needs {', '.join(HOST_TOOLS)} (tests/mta/install.sh installs them)")]


def version() -> str:
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    return first.split("(")[1].split(")")[0]


def copy_source(target: Path, new_version: str | None = None) -> Path:
    """The source tree as a build sees it (no VCS, venv, caches or compiled module)."""
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.so", ".pytest_cache", ".mypy_cache", ".pybuild", "*.egg-info"))
    if new_version:
        changelog = target / "debian" / "changelog"
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        maintainer = re.search(r"^ -- (.*?>)", changelog.read_text(), re.M)
        assert maintainer
        changelog.write_text(f"mailban ({new_version}) unstable; urgency=medium\n\n  * Rebuilt for the upgrade test."
                             f"\n\n -- {maintainer.group(1)}  {stamp}\n\n" + changelog.read_text())
    return target


def build_host(work: Path, new_version: str | None = None) -> list[Path]:
    """dpkg-buildpackage on this machine (Debian 12): the .debs, and the .changes last."""
    out = work / (new_version or "base")
    src = copy_source(out / "src", new_version)
    proc = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return sorted(out.glob("*.deb")) + sorted(out.glob("*.changes"))


def build_in(fresh: Fresh, work: Path, new_version: str | None = None) -> list[Path]:
    """dpkg-buildpackage inside a root (Debian 13); the results copied out to `work`."""
    name = new_version or "base"
    copy_source(fresh.path(f"/build/{name}/src"), new_version)
    proc = fresh.run(["env", "-C", f"/build/{name}/src", "dpkg-buildpackage", "-us", "-uc", "-b"],
                     check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = work / name
    out.mkdir(parents=True)
    for path in fresh.path(f"/build/{name}").iterdir():
        if path.is_file():
            shutil.copy(path, out / path.name)
    return sorted(out.glob("*.deb")) + sorted(out.glob("*.changes"))


def lintian_problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line[:2] in ("E:", "W:")]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, list[Path]]]]:
    """{release: {"base"|"upgrade": [debs..., changes]}}, and lintian's E:/W: lines per release."""
    work = tmp_path_factory.mktemp("debs")
    started = time.monotonic()
    result: dict[str, dict[str, list[Path]]] = {"bookworm": {}, "trixie": {}}
    result["bookworm"]["base"] = build_host(work / "bookworm")
    result["bookworm"]["upgrade"] = build_host(work / "bookworm", version() + UPGRADE)
    lint = run(["lintian", "--fail-on", "none", str(result["bookworm"]["base"][-1])], check=False)
    result["bookworm"]["lintian"] = lintian_problems(lint.stdout + lint.stderr)  # type: ignore[assignment]
    build_root = ensure_root("trixie-build", "trixie", BUILD_PACKAGES)
    with Fresh(build_root, "trixie") as fresh:
        result["trixie"]["base"] = build_in(fresh, work / "trixie")
        result["trixie"]["upgrade"] = build_in(fresh, work / "trixie", version() + UPGRADE)
        changes = "/build/base/" + result["trixie"]["base"][-1].name
        lint = fresh.run(["lintian", "--fail-on", "none", changes], check=False)
        result["trixie"]["lintian"] = lintian_problems(lint.stdout + lint.stderr)  # type: ignore[assignment]
    print(f"4 packages built and 2 lintian runs in {time.monotonic() - started:.0f} s")
    yield result


def test_package_names_and_lintian(packages: dict[str, dict[str, list[Path]]]) -> None:
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    for release in ("bookworm", "trixie"):
        names = [p.name for p in packages[release]["base"]]
        assert f"mailban_{version()}_{arch}.deb" in names, names
        # lintian: no error and no warning (debian/mailban.lintian-overrides is empty on purpose)
        assert packages[release]["lintian"] == [], (release, packages[release]["lintian"])


def deb(packages: dict[str, dict[str, list[Path]]], release: str, which: str) -> Path:
    (path,) = [p for p in packages[release][which] if re.match(r"mailban_[^_]+_[^_]+\.deb$", p.name)]
    return path


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_install_use_upgrade_ban_purge(packages: dict[str, dict[str, list[Path]]], release: str) -> None:
    cached = ensure_root(release, release, BASE_PACKAGES)
    timings: list[str] = []
    clock = time.monotonic()

    def lap(what: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings.append(f"{what} {now - clock:.1f}s")
        clock = now

    with Fresh(cached, release) as fresh:
        fresh.run(APT + ["update"], timeout=300)
        before = fresh.files()
        (fresh.path("/tmp/debs")).mkdir()
        for which in ("base", "upgrade"):
            shutil.copy(deb(packages, release, which), fresh.path("/tmp/debs"))
        base = "/tmp/debs/" + deb(packages, release, "base").name
        fresh.run(APT + ["install", base], timeout=600)
        lap("install")

        # the command, its configuration, its manual, its filters on a real log
        assert fresh.run(["mailban", "--version"]).stdout.strip() == f"mailban {version().split('+')[0]}"
        check = fresh.run(["mailban", "check"])
        assert "configuration OK: /etc/mailban/mailban.toml" in check.stdout
        checked = json.loads(fresh.run(["mailban", "check", "--json"]).stdout)
        assert checked["speedups"] is True  # the C module, built for this release's python3
        shipped = {Path(f["path"]).name for f in checked["filters"]}
        assert shipped == {p.name for p in (ROOT / "filters.d").glob("*.toml")}
        man = fresh.run(["man", "mailban"], env={**ENV, "MANPAGER": "cat", "MANWIDTH": "80"})
        assert "mailban run" in man.stdout and "SYNOPSIS" in man.stdout
        fresh.run(["man", "-w", "mailban.toml"])
        shutil.copy(ROOT / "tests" / "filters" / "postfix.log", fresh.path("/tmp/postfix.log"))
        tested = fresh.run(["mailban", "test", "/tmp/postfix.log", "--json"])
        assert '"ip": "' in tested.stdout
        replay = fresh.run(["mailban", "replay", "/tmp/postfix.log"])
        assert replay.stdout.strip()
        assert fresh.path("/usr/share/bash-completion/completions/mailban").read_text().startswith("# bash completion")
        lap("commands")

        # an admin's edit survives the upgrade to a higher version
        conf = fresh.path("/etc/mailban/mailban.toml")
        conf.write_text(conf.read_text() + "\n[jail.mail-abuse]\nmaxretry = 7\n")
        edited = conf.read_text()
        fresh.run(APT + ["install", "/tmp/debs/" + deb(packages, release, "upgrade").name], timeout=600)
        status = fresh.run(["dpkg-query", "-W", "-f", "${Version}", "mailban"]).stdout
        assert status == version() + UPGRADE
        assert conf.read_text() == edited
        assert not fresh.path("/etc/mailban/mailban.toml.dpkg-new").exists()
        jails = json.loads(fresh.run(["mailban", "check", "--json"]).stdout)["jails"]
        assert [j["maxretry"] for j in jails if j["name"] == "mail-abuse"] == [7]
        lap("upgrade")

        # The daemon bans in a namespace of its own, and the purge runs there too: it deletes the
        # table of the namespace it runs in, which must not be this machine's.
        link = Link().up()
        try:
            ban_with_packaged_unit(fresh, link)
            lap("daemon")
            assert '"198.51.100.77"' in banned(fresh, link)  # the kernel keeps the ban after the daemon
            run(link.exec_argv(link.srv, fresh.argv(APT + ["purge", "mailban"])), timeout=300)
            gone = run(link.exec_argv(link.srv, ["nft", "list", "tables"]))
            assert "mailban" not in gone.stdout, gone.stdout
        finally:
            link.close()
        fresh.run(APT + ["autoremove", "--purge"], timeout=300)
        shutil.rmtree(fresh.path("/tmp/debs"))  # the test's own copies
        after = fresh.files()
        lap("purge")
        left = sorted(p for p in after - before if not BOOKKEEPING.match(p))
        assert left == [], left
        # Nothing named after mailban either, bookkeeping included, but for the page that
        # `man mailban` formatted into man-db's cache (man-db's daily mandb run drops it).
        named = [p for p in after - before if "mailban" in p and not p.startswith("/var/cache/man/cat")]
        assert named == [], named
    print(f"{release}: " + ", ".join(timings))


# ---- the packaged daemon under the packaged unit's settings ---------------------------------------

def unit_settings(fresh: Fresh) -> dict[str, str]:
    """The [Service] settings of the installed unit with the shipped unprivileged drop-in on top,
    as systemd merges them (a later assignment replaces an earlier one)."""
    units = [p for p in (fresh.path("/usr/lib/systemd/system/mailban.service"),
                         fresh.path("/lib/systemd/system/mailban.service")) if p.exists()]
    assert units, "the package installed no unit"
    settings: dict[str, str] = {}
    for path in (units[0], fresh.path("/usr/share/mailban/systemd/unprivileged.conf")):
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def banned(fresh: Fresh, link: Link) -> str:
    """The ipv4 set of the namespace's mailban table, listed by the root's own nft (this
    machine's Debian 12 nft may not read what Debian 13's libnftables wrote)."""
    res = run(link.exec_argv(link.srv, fresh.argv(["nft", "-j", "list", "set", "inet", "mailban", "banned4"])),
              check=False)
    return res.stdout if res.returncode == 0 else ""


def ban_with_packaged_unit(fresh: Fresh, link: Link) -> None:
    s = unit_settings(fresh)
    assert s["ExecStart"] == "/usr/bin/mailban run", s["ExecStart"]
    assert s["User"] == "mailban" and s["CapabilityBoundingSet"] == "CAP_NET_ADMIN" == s["AmbientCapabilities"]
    assert s["NoNewPrivileges"] == "yes"
    uid = int(fresh.run(["id", "-u", s["User"]]).stdout)
    groups = [g for g in s.get("SupplementaryGroups", "").split()
              if fresh.run(["getent", "group", g], check=False).returncode == 0]  # systemd-journal: systemd's
    # What systemd does before ExecStart: StateDirectory= and RuntimeDirectory= owned by User=.
    for base, kind in (("/var/lib/", "State"), ("/run/", "Runtime")):
        fresh.run(["install", "-d", "-m", s[f"{kind}DirectoryMode"], "-o", s["User"], "-g", s.get("Group", s["User"]),
                   base + s[f"{kind}Directory"]])
    # The log as rsyslog writes it on Debian: root:adm 0640 (the drop-in's user reads it through adm).
    log = fresh.path("/var/log/mail.log")
    log.write_bytes(b"")
    fresh.run(["chown", "root:adm", "/var/log/mail.log"])
    log.chmod(0o640)
    conf = fresh.path("/etc/mailban/jail.d/test.toml")
    conf.write_text('[mailban]\nmetrics = ""\njournal = false\n')  # no journal in a root without systemd

    caps = ["--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin"]
    argv = ["setpriv", f"--reuid={uid}", f"--regid={s.get('Group', s['User'])}",
            f"--groups={','.join(groups)}" if groups else "--clear-groups", *caps, "--no-new-privs", "--",
            *s["ExecStart"].split()]
    out_path = fresh.path("/tmp/daemon.out")
    proc = None
    try:
        with open(out_path, "wb") as out:
            umask = int(s.get("UMask", "0022"), 8)
            proc = subprocess.Popen(link.exec_argv(link.srv, fresh.argv(argv)), stdout=out, stderr=subprocess.STDOUT,
                                    env=ENV, preexec_fn=lambda: os.umask(umask))
        sock = str(fresh.path("/run/mailban/mailban.sock"))

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the packaged daemon exited:\n{out_path.read_text(errors='replace')}")
            try:
                return bool(os.path.exists(sock) and request(sock, {"cmd": "status"}, timeout=2).get("ok"))
            except (OSError, ValueError):
                return False

        wait_for(answering, timeout=30, what=f"the packaged daemon:\n{out_path.read_text(errors='replace')}")
        pid = int(run(["pgrep", "-u", str(uid), "-f", "/usr/bin/mailban run"]).stdout.split()[0])
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert fields["Uid"].split()[0] == str(uid)
        assert int(fields["CapEff"], 16) == 1 << 12 == int(fields["CapBnd"], 16)  # CAP_NET_ADMIN alone
        append(log, failure_line("198.51.100.77") * 8)  # mail-abuse: maxretry 7, the admin's edit kept above
        try:
            took = wait_for(lambda: '"198.51.100.77"' in banned(fresh, link), timeout=15, what="a ban")
        except AssertionError as exc:
            status = fresh.run(["mailban", "status", "--json"], check=False)
            raise AssertionError(f"{exc} by the packaged daemon:\n{out_path.read_text(errors='replace')}\n"
                                 f"{status.stdout}{status.stderr}\n{banned(fresh, link)}") from None
        print(f"packaged daemon ({fresh.release}): ban in the kernel set after {took * 1000:.0f} ms")
        listed = fresh.run(["mailban", "list"]).stdout
        assert "198.51.100.77" in listed
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        conf.unlink(missing_ok=True)
