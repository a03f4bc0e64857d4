"""Debian 13 (trixie) postfix 3.10 + dovecot 2.4 for the real-MTA tests, from a debootstrapped root.

The root (`ROOT`, default /var/cache/mailban-test/trixie-root, or $MAILBAN_TRIXIE_ROOT) is built
once per machine by `ensure_root()`: debootstrap (installed with apt when missing) of a minbase
trixie from the machine's own Debian mirror, then postfix, dovecot-imapd and dovecot-pop3d
installed inside it (45 to 90 s; recipe: /work/shared/REAL-MTA.md section 8; the mirror is the
one in /etc/apt/sources.list.d/debian.sources, or $MAILBAN_TRIXIE_MIRROR). When it cannot be
built (no network to the mirror), the tests skip with the reason. The cached root is
never written by a test: each `Trixie` instance mounts an overlay on it (upper and work
directories under /var/lib/mbmta/trx-*), so two instances, or another user of the cached root,
never share a queue, a pid file or a log, and cleanup is an unmount.

The programs run chrooted in the overlay (`self.root`) inside a network namespace of their own
(`self.netns`, only `lo`): there every 127.x address is local, so clients bind any 127.0.0.N
source address as on the Debian 12 harness. Test code opens its client sockets inside the
namespace with `with mta.inside(): ...` (setns of the calling thread: sockets keep their
namespace afterwards; programs started there inherit it). Inside the namespace the ports are
fixed: smtpd 25, postscreen 10025, imap 143, pop3 110, all on 127.0.0.1.

mailban runs on the host and reads the logs from the overlay: `maillog` (postfix's
maillog_file) and `dovecot_log` (dovecot's log_path). Actions reach the chrooted programs with
`mta.tool("postqueue")` = ["chroot", ROOT, "postqueue"] and so on. A symlink inside the root
makes the overlay's host path (`self.root`) name the root itself, so a host path such as
`mta.deny_file` or `mta.sasl_map` means the same file inside and outside the chroot (postmap is
given the host path and runs chrooted).

Same interface as tests/mta/postfix_dovecot.PostfixDovecot: the constructor options
(sasl_disable, main_extra, dovecot_extra, extra_users), start(), stop(), cleanup(keep_logs_in),
the context manager, and the attributes smtp_port, postscreen_port, imap_port, pop3_port,
maillog, dovecot_log, deny_file, sasl_map, admin_mbox, users. Extra here: inside(), tool(),
run_in(), `version` ("trixie"), `dovecot_version`, `postfix_version`.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.mta import debian_mirror, in_netns
from tests.mta.postfix_dovecot import Service, dovecot_services, main_cf, master_cf, pid_alive, start_daemon

ROOT = Path(os.environ.get("MAILBAN_TRIXIE_ROOT", "/var/cache/mailban-test/trixie-root"))
PACKAGES = ["postfix", "dovecot-imapd", "dovecot-pop3d", "systemd-standalone-sysusers"]
NEEDED = ["usr/bin/apt-get", "usr/sbin/dovecot", "usr/bin/doveadm", "usr/sbin/postconf", "usr/sbin/postfix",
          "usr/lib/dovecot/imap-login", "usr/lib/dovecot/pop3-login"]
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
_counter = itertools.count()
_build_failed: dict[Path, str] = {}  # a failed build is tried once per test session, not per test


def _run(argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout, **kw)


def root_complete(root: Path = ROOT) -> bool:
    return all((root / p).exists() for p in NEEDED)


def ensure_root(root: Path = ROOT) -> str | None:
    """Build the cached root when it is missing. Returns None when it is ready, else why not
    (the caller skips: e.g. no network to the mirror). A lock keeps concurrent builds apart;
    the root appears under its name only when complete."""
    if root_complete(root):
        return None
    if os.geteuid() != 0:
        return "building the Debian 13 root needs root"
    if root in _build_failed:
        return _build_failed[root]
    reason = _build(root)
    if reason:
        _build_failed[root] = reason
    return reason


def _build(root: Path) -> str | None:
    tmp = Path(f"{root}.tmp-{os.getpid()}")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{root}.lock", "w")
    except OSError as exc:
        return f"cannot build the Debian 13 root in {root}: {exc}"
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root_complete(root):
            return None
        t0 = time.monotonic()
        try:
            if shutil.which("debootstrap") is None:
                _run(APT + ["update", "-q"], timeout=300)
                _run(APT + ["install", "-y", "-q", "--no-install-recommends", "debootstrap"], timeout=300,
                     env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            shutil.rmtree(tmp, ignore_errors=True)
            # no --include: systemd would pre-depend on a library not yet configured
            _run(["debootstrap", "--variant=minbase", "trixie", str(tmp), debian_mirror()], timeout=600)
            # no service starts from maintainer scripts; doveconf wants /etc/mtab
            (tmp / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
            (tmp / "usr/sbin/policy-rc.d").chmod(0o755)
            if not (tmp / "etc/mtab").is_symlink():
                (tmp / "etc/mtab").symlink_to("../proc/self/mounts")
            _run(["mount", "-t", "proc", "proc", str(tmp / "proc")])
            try:
                script = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q\n"
                          "echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections\n"
                          "echo 'postfix postfix/mailname string mail.example.test' | debconf-set-selections\n"
                          f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)}\n"
                          "apt-get clean\n")
                _run(["chroot", str(tmp), "sh", "-c", script], timeout=600)
            finally:
                subprocess.run(["umount", str(tmp / "proc")], capture_output=True)
            if not root_complete(tmp):
                return f"the Debian 13 root built in {tmp} lacks one of {NEEDED}"
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            out = getattr(exc, "stderr", "") or ""
            subprocess.run(["umount", str(tmp / "proc")], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
            return f"cannot build the Debian 13 root (network to {debian_mirror()}?): {exc} {str(out)[-1500:]}"
        print(f"[trixie] built {root} in {time.monotonic() - t0:.1f}s")
    return None


class Trixie(Service):
    version = "trixie"

    def __init__(self, sasl_disable: bool = False, main_extra: dict[str, str] | None = None,
                 dovecot_extra: str = "", extra_users: dict[str, str] | None = None) -> None:
        self._options("trx-", sasl_disable, main_extra, dovecot_extra, extra_users)
        self.root = self.work / "root"
        self.netns = f"mbtrx-{os.getpid()}-{next(_counter)}"
        self.smtp_port, self.postscreen_port, self.imap_port, self.pop3_port = 25, 10025, 143, 110
        # host paths (the same paths name the same files inside the chroot, see the module doc)
        self.etc = self.root / "etc/postfix"
        self.maillog = self.root / "var/log/mailban-test/postfix.log"
        self.dovecot_log = self.root / "var/log/mailban-test/dovecot.log"
        self.dovecot_conf = self.root / "etc/dovecot/mailban-test.conf"
        self.deny_file = self.root / "etc/dovecot/mailban-deny"
        self.sasl_map = self.etc / "mailban_sasl_access"
        self.admin_mbox = self.root / "var/lib/mailban-test/admin.mbox"
        self.mounted: list[Path] = []
        self.netns_created = False
        self.dovecot_version = ""
        self.postfix_version = ""

    # --- commands into the root ----------------------------------------------------------------
    def tool(self, name: str, *args: str) -> list[str]:
        """argv prefix running one of the root's programs (chrooted, on the host's network)."""
        return ["chroot", str(self.root), name, *args]

    def run_in(self, argv: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run a program chrooted inside the namespace (daemons: they must listen there)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, "chroot", str(self.root), *argv],
                              check=check, capture_output=True, text=True, timeout=timeout)

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """Run the block's socket calls (and programs it starts) in the namespace."""
        return in_netns(self.netns)

    # --- configuration -------------------------------------------------------------------------
    def _mount(self) -> None:
        upper, wk = self.work / "upper", self.work / "ovl-work"
        for d in (upper, wk, self.root):
            d.mkdir()
        _run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={ROOT},upperdir={upper},workdir={wk}",
              str(self.root)])
        self.mounted.append(self.root)
        _run(["mount", "-t", "proc", "proc", str(self.root / "proc")])
        self.mounted.append(self.root / "proc")
        # the overlay's host path, inside the root, is the root itself
        link = self.root / str(self.root).lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/")

    def write_config(self) -> None:
        r = self.root
        for d in ("var/log/mailban-test", "var/lib/mailban-test", "srv/mail"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "srv/mail").chmod(0o1777)
        # a clean queue and no old logs (the cached root may hold some from a capture)
        for sub in ("active", "incoming", "deferred", "hold", "maildrop", "defer", "bounce", "corrupt"):
            shutil.rmtree(r / "var/spool/postfix" / sub, ignore_errors=True)
        self.dovecot_version = _run(self.tool("dovecot", "--version")).stdout.split()[0]
        self.postfix_version = _run(self.tool("postconf", "-h", "mail_version")).stdout.strip()
        etc = Path("/etc/postfix")  # paths as the chrooted programs see them
        (self.etc / "aliases").write_text("postmaster: root\nmbadmin: /var/lib/mailban-test/admin.mbox\n")
        self.admin_mbox.write_text("")
        _run(self.tool("chown", "nobody:nogroup", "/var/lib/mailban-test/admin.mbox"))
        self.admin_mbox.chmod(0o600)
        for f in ("sasl_access", "mailban_sasl_access"):
            (self.etc / f).write_text("")
        (self.etc / "client_access").write_text("127.0.0.28/32 reject_unknown_client_hostname\n"
                                                "127.0.0.29/32 reject_unknown_reverse_client_hostname\n")
        own = {
            "maillog_file": "/var/log/mailban-test/postfix.log",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "postscreen_cache_map": "btree:$data_directory/postscreen_cache",
        }
        (self.etc / "main.cf").write_text(main_cf(etc, own, self.sasl_map if self.sasl_disable else None,
                                                  self.main_extra))
        # postfix's own chroot column "n": the Debian 12 harness does the same, the lines are alike
        (self.etc / "master.cf").write_text(master_cf(self.smtp_port, self.postscreen_port))
        _run(self.tool("postalias", f"hash:{etc}/aliases"))
        for f in ("sasl_access", "mailban_sasl_access"):
            _run(self.tool("postmap", f"hash:{etc}/{f}"))

        d = self.root / "etc/dovecot"
        (d / "mailban-users").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()))
        self.deny_file.write_text("")
        for f in ("mailban-users", "mailban-deny"):
            _run(self.tool("chown", "root:dovecot", f"/etc/dovecot/{f}"))
            (d / f).chmod(0o640)
        # dovecot 2.4 syntax (2.3's `args =` and `disable_plaintext_auth` are refused): the deny
        # passdb is the form docs/outbound.md gives for 2.4 hosts
        self.dovecot_conf.write_text(f"""\
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
instance_name = mbtrx-{self.work.name}
protocols = imap pop3
listen = 127.0.0.1
log_path = /var/log/mailban-test/dovecot.log
info_log_path = /var/log/mailban-test/dovecot.log
auth_verbose = yes
auth_mechanisms = plain login
auth_allow_cleartext = yes
ssl = no
mail_driver = maildir
mail_path = /srv/mail/%{{user}}
default_internal_user = dovecot
default_login_user = dovenull
passdb mailban-deny {{
  driver = passwd-file
  passwd_file_path = /etc/dovecot/mailban-deny
  deny = yes
}}
passdb passwd-file {{
  passwd_file_path = /etc/dovecot/mailban-users
}}
userdb static {{
  fields {{
    uid = nobody
    gid = nogroup
    home = /srv/mail/%{{user}}
  }}
}}
{dovecot_services(self.imap_port, self.pop3_port, "/var/spool/postfix/private/auth", None)}
{self.dovecot_extra}
""")

    # --- start / stop ------------------------------------------------------------------------
    def start(self) -> None:
        reason = ensure_root()
        if reason:
            raise RuntimeError(reason)
        self._mount()
        _run(["ip", "netns", "add", self.netns])
        self.netns_created = True
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        self.write_config()
        conf = "/" + str(self.dovecot_conf.relative_to(self.root))
        _run(self.tool("postfix", "check"))
        # daemons: their children keep stdio open, so it goes to a file, never a pipe
        ns = ["ip", "netns", "exec", self.netns, "chroot", str(self.root)]
        start_daemon([*ns, "postfix", "start"], self.work / "start.err")
        start_daemon([*ns, "dovecot", "-c", conf], self.work / "start.err")
        end = time.monotonic() + 15
        while not (self.root / "var/spool/postfix/private/auth").exists() or not self._listening():
            if time.monotonic() > end:
                raise RuntimeError("postfix/dovecot did not come up: " + self._tail())
            time.sleep(0.05)

    def _listening(self) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hltn"], capture_output=True, text=True)
        ports = {line.split()[3].rsplit(":", 1)[-1] for line in out.stdout.splitlines() if line.strip()}
        return {str(p) for p in (self.smtp_port, self.postscreen_port, self.imap_port, self.pop3_port)} <= ports

    def _tail(self) -> str:
        return "".join(f.read_text(errors="replace")[-1500:] for f in (self.maillog, self.dovecot_log)
                       if f.exists())

    def _root_pids(self) -> list[int]:
        """Every process whose root directory is the overlay (daemons and stragglers)."""
        pids = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.readlink(p / "root") == str(self.root):
                        pids.append(int(p.name))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        if self.netns_created and (self.root / "usr/sbin/postfix").exists():
            subprocess.run(self.tool("postfix", "stop"), capture_output=True, timeout=60)
            pidfile = self.root / "run/dovecot/master.pid"
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                pass
        end = time.monotonic() + 10
        while self._root_pids() and time.monotonic() < end:
            time.sleep(0.05)
        for pid in self._root_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while any(pid_alive(p) for p in self._root_pids()) and time.monotonic() < end:
            time.sleep(0.05)

    def cleanup(self, keep_logs_in: Path | None = None) -> None:
        """Stop everything; copy the logs somewhere (e.g. pytest's tmp_path), delete the rest."""
        try:
            self.stop()
            if keep_logs_in is not None:
                for f in (self.maillog, self.dovecot_log):
                    if f.exists():
                        shutil.copy(f, keep_logs_in / f.name)
        finally:
            for m in reversed(self.mounted):
                if subprocess.run(["umount", str(m)], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", str(m)], capture_output=True)
            self.mounted.clear()
            if self.netns_created:
                subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
                self.netns_created = False
            if not any(str(self.work) in line for line in Path("/proc/mounts").read_text().splitlines()):
                shutil.rmtree(self.work, ignore_errors=True)


# --- one interface over both Debian releases, for tests parametrised over them -------------------
VERSIONS = ["bookworm", "trixie"]  # Debian 12 (the host's programs), Debian 13 (this root)


def skip_reason(version: str) -> str | None:
    """Why this machine cannot run that release's postfix + dovecot (None: it can)."""
    if os.geteuid() != 0:
        return "needs root: starts postfix/dovecot in private directories and network namespaces"
    if version == "trixie":
        for tool in ("ip", "chroot", "mount"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (run tests/mta/install.sh)"
        return ensure_root()
    for tool in ("postfix", "dovecot", "doveadm", "postqueue", "postsuper", "postcat"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run tests/mta/install.sh)"
    for f in ("/usr/lib/dovecot/imap-login", "/usr/lib/dovecot/pop3-login"):
        if not os.path.exists(f):
            return f"{f} is missing (run tests/mta/install.sh)"
    return None


def new_mta(version: str, **options):
    """A PostfixDovecot (bookworm: the host's programs) or a Trixie (the Debian 13 root)."""
    if version == "trixie":
        return Trixie(**options)
    from tests.mta.postfix_dovecot import PostfixDovecot
    return PostfixDovecot(**options)


def clients_of(mta) -> contextlib.AbstractContextManager:
    """Where a test's clients open their sockets: the trixie root's network namespace, or here."""
    return mta.inside() if hasattr(mta, "inside") else contextlib.nullcontext()
