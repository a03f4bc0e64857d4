"""A private sendmail 8.17 in its own network namespace, logging through a private rsyslogd.

Recipe: /work/shared/REAL-MTA.md section 5, with these changes so that nothing clashes with the
host or with other tests:
  - the work directory is /var/lib/mbmta/sm-XXXX (sendmail refuses group/world-writable parents,
    so not /tmp); the namespace is `mbmta-sm-<pid>` with only `lo`, and its /etc/hosts comes
    from /etc/netns/<ns>/hosts (removed again at stop);
  - rsyslogd listens on a socket in the work directory instead of /dev/log; sendmail runs in the
    mount namespace `ip netns exec` creates, where that socket is bind-mounted over /dev/log
    (an empty placeholder /dev/log is created on the host only if none exists, and removed);
  - rsyslogd folds repeated lines (`$RepeatedMsgReduction on`, as many hosts configure it), so
    the tests see `message repeated N times: [ ...]` as such hosts write it;
  - greet_pause is 300 ms instead of 1 s, and 0 for 127.0.0.1; blocklist_recipients makes
    `To:` access entries reject (a check_rcpt reject other than relaying).
/etc/sasl2/Sendmail.conf is the one file cyrus-sasl insists on: an existing one is saved and
restored.

The sendmail binary comes from the unpacked .debs of tests/mta/install.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .postfix_dovecot import BASE, Service, pid_alive, run, start_daemon

SMROOT = Path(os.environ.get("MAILBAN_SENDMAIL_ROOT", "/opt/mailban-test/sendmail/root"))
SMDIR = SMROOT / "usr/libexec/sendmail"
CFDIR = SMROOT / "usr/share/sendmail/cf"
PORT = 2526
SASL_CONF = Path("/etc/sasl2/Sendmail.conf")
REPO = Path(__file__).resolve().parents[2]

# test addresses with a role in the access map / hosts file
AUTH_FAIL = "127.0.0.40"
RELAY = "127.0.0.41"          # has a hosts entry: "550 Relaying denied" instead of the PTR 450
CONNECT_REJECT = "127.0.0.42"
RATE = "127.0.0.43"
CONN = "127.0.0.44"
PREGREET = "127.0.0.45"
ATTACK = "127.0.0.46"
NO_MAIL = "127.0.0.47"
MAIL_REJECT = "127.0.0.48"
RCPT_REJECT = "127.0.0.49"   # has a hosts entry too (a client without PTR gets the 450 first)
LOGIN_OK = "127.0.0.50"
HOSTILE = "127.0.0.51"
FOLDED = "127.0.0.53"        # one session of repeated AUTH failures: rsyslog folds the copies


def available() -> str | None:
    """None if sendmail can run here, else the reason it cannot."""
    for tool in ("m4", "rsyslogd", "saslpasswd2", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run tests/mta/install.sh)"
    if not (SMDIR / "sendmail").exists():
        return f"no sendmail binary in {SMDIR} (run tests/mta/install.sh)"
    return None


class Sendmail(Service):
    def __init__(self) -> None:
        BASE.mkdir(mode=0o755, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="sm-", dir=BASE))
        self.work.chmod(0o755)
        self.netns = f"mbmta-sm-{os.getpid()}"
        self.netns_etc = Path("/etc/netns") / self.netns
        self.log = self.work / "sendmail.log"
        self.sock = self.work / "log.sock"
        self.rsyslog_pid: int | None = None
        self.sendmail_pid: int | None = None
        self.netns_created = False
        self.devlog_placeholder = False
        self.sasl_backup: bytes | None = None
        self.sasl_written = False
        self.sasl_dir_created = False

    # --- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        w = self.work
        (w / "mqueue").mkdir(mode=0o700)
        shutil.copy(SMROOT / "etc/mail/helpfile", w / "helpfile")
        (w / "service.switch").write_text("hosts files\naliases files\n")
        # sink: a local recipient whose delivery succeeds (the file mailer), for stat=Sent lines
        (w / "aliases").write_text("postmaster: root\nsink: /dev/null\n")
        (w / "access").write_text(
            f"ClientRate:{RATE}\t2\n"
            f"ClientConn:{CONN}\t1\n"
            f"Connect:{CONNECT_REJECT}\tREJECT\n"
            "From:spammer.example\tREJECT\n"
            "To:blocked.example.net\tREJECT\n"
            "GreetPause:127.0.0.1\t0\n"
        )
        mc = f"""\
divert(-1)dnl
divert(0)dnl
VERSIONID(`mailban sendmail test')dnl
OSTYPE(`linux')dnl
FEATURE(`no_default_msa')dnl
define(`confDOMAIN_NAME', `mx.example.test')dnl
define(`confSERVICE_SWITCH_FILE', `{w}/service.switch')dnl
define(`QUEUE_DIR', `{w}/mqueue')dnl
define(`confPID_FILE', `{w}/sendmail.pid')dnl
define(`STATUS_FILE', `{w}/statistics')dnl
define(`ALIAS_FILE', `{w}/aliases')dnl
define(`HELP_FILE', `{w}/helpfile')dnl
define(`LOCAL_MAILER_PATH', `{SMDIR}/mail.local')dnl
define(`confLOG_LEVEL', `9')dnl
define(`confTO_IDENT', `0s')dnl
define(`confDONT_PROBE_INTERFACES', `true')dnl
define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl
define(`confCONNECTION_RATE_WINDOW_SIZE', `60s')dnl
define(`confBAD_RCPT_THROTTLE', `3')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`access_db', `hash -T<TMPF> -o {w}/access')dnl
FEATURE(`blocklist_recipients')dnl
FEATURE(`greet_pause', `300')dnl
FEATURE(`ratecontrol', `', `terminate')dnl
FEATURE(`conncontrol', `', `terminate')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA-v4, Port={PORT}, Addr=127.0.0.1')dnl
LOCAL_DOMAIN(`mx.example.test')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
"""
        (w / "sendmail.mc").write_text(mc)
        with open(w / "sendmail.cf", "w") as cf:
            subprocess.run(["m4", f"-D_CF_DIR_={CFDIR}/", f"{CFDIR}/m4/cf.m4", str(w / "sendmail.mc")],
                           stdout=cf, check=True, timeout=60)
        with open(w / "access") as src:
            subprocess.run([str(SMDIR / "makemap"), "-C", str(w / "sendmail.cf"), "hash", str(w / "access")],
                           stdin=src, check=True, capture_output=True, timeout=60)
        # in the namespace: there the host name has an FQDN (else sendmail sleeps 60 s)
        run(["ip", "netns", "exec", self.netns, str(SMDIR / "sendmail"), "-C", str(w / "sendmail.cf"), "-bi"])
        # SASL: a sasldb in the work directory, named by the system-wide Sendmail.conf
        if SASL_CONF.exists():
            self.sasl_backup = SASL_CONF.read_bytes()
        if not SASL_CONF.parent.exists():
            SASL_CONF.parent.mkdir()
            self.sasl_dir_created = True
        SASL_CONF.write_text(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {w}/sasldb2\n"
                             "mech_list: PLAIN LOGIN\n")
        self.sasl_written = True
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(w / "sasldb2"), "-u", "mx.example.test", "alice"],
                       input=b"S3cret-alice", check=True, capture_output=True, timeout=60)
        (w / "rsyslog.conf").write_text(f"""\
global(workDirectory="{w}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.sock}" CreatePath="off")
$RepeatedMsgReduction on
$template Trad,"%TIMESTAMP% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n"
mail.*\t{self.log};Trad
""")

    # --- start / stop ------------------------------------------------------------------------
    def start(self) -> None:
        w = self.work
        run(["ip", "netns", "add", self.netns])
        self.netns_created = True
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        self.netns_etc.mkdir(parents=True, exist_ok=True)
        # an FQDN for the host name (else sendmail sleeps 60 s), and a name for RELAY
        (self.netns_etc / "hosts").write_text(
            f"127.0.0.1 {os.uname().nodename}.example.test {os.uname().nodename} localhost\n"
            f"{RELAY} bad41.example.net\n{RCPT_REJECT} bad49.example.net\n"
        )
        self.write_config()
        start_daemon(["rsyslogd", "-f", str(w / "rsyslog.conf"), "-i", str(w / "rsyslog.pid")], w / "start.err")
        self.rsyslog_pid = self._wait_pid(w / "rsyslog.pid")
        self._wait(lambda: self.sock.exists(), "rsyslogd did not create its socket")

        if not os.path.lexists("/dev/log"):
            Path("/dev/log").touch()
            self.devlog_placeholder = True
        # "$0".. are argv entries, not interpolated text
        script = 'mount --bind "$0" /dev/log && exec "$1" -L sm-mta -C "$2" -bd -q30m'
        start_daemon(["ip", "netns", "exec", self.netns, "sh", "-c", script,
                      str(self.sock), str(SMDIR / "sendmail"), str(w / "sendmail.cf")], w / "start.err")
        self.sendmail_pid = self._wait_pid(w / "sendmail.pid")
        # ready when it logs its start line
        self._wait(lambda: self.log.exists() and b"starting daemon" in self.log.read_bytes(),
                   "sendmail did not log its start")

    def _wait(self, cond, message: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                err = (self.work / "start.err")
                raise RuntimeError(message + (": " + err.read_text()[-2000:] if err.exists() else ""))
            time.sleep(0.02)

    def _wait_pid(self, pidfile: Path) -> int:
        self._wait(lambda: pidfile.exists() and pidfile.read_text().split(), f"no pid in {pidfile}")
        return int(pidfile.read_text().split()[0])

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        self._wait(lambda: self.log.exists() and text.encode() in self.log.read_bytes(),
                   f"sendmail did not log {text!r}", timeout)

    def clients(self, calls: list[list]) -> list:
        """Run tests.mta.clients calls inside the namespace: [[func, src, *args], ...]."""
        batch = json.dumps([[c[0], "127.0.0.1", PORT, *c[1:]] for c in calls])
        out = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.mta.clients",
                              "--batch", batch], cwd=REPO, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"clients failed: {out.stderr[-3000:]}")
        return json.loads(out.stdout)

    def stop(self) -> None:
        for attr, pidfile in (("sendmail_pid", "sendmail.pid"), ("rsyslog_pid", "rsyslog.pid")):
            pid = getattr(self, attr)
            if pid is None:  # start failed before the pid was read
                try:
                    pid = int((self.work / pidfile).read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
            if not pid:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            setattr(self, attr, None)
        # sendmail children (sessions still open) live in the namespace: kill them by netns pids
        if self.netns_created:
            pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            self.netns_created = False
        shutil.rmtree(self.netns_etc, ignore_errors=True)
        if self.devlog_placeholder:
            try:
                if Path("/dev/log").is_file():
                    Path("/dev/log").unlink()
            except OSError:
                pass
            self.devlog_placeholder = False
        if self.sasl_written:
            if self.sasl_backup is not None:
                SASL_CONF.write_bytes(self.sasl_backup)
            else:
                SASL_CONF.unlink(missing_ok=True)
            self.sasl_written = False
        if self.sasl_dir_created:
            try:
                SASL_CONF.parent.rmdir()
            except OSError:
                pass
            self.sasl_dir_created = False

    def cleanup(self, keep_logs_in: Path | None = None) -> None:
        self.stop()
        if keep_logs_in is not None and self.log.exists():
            shutil.copy(self.log, keep_logs_in / self.log.name)
        shutil.rmtree(self.work, ignore_errors=True)

