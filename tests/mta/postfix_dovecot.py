"""A private postfix + dovecot instance on loopback, for the real-MTA tests.

Everything lives in one work directory under /var/lib/mbmta (postfix refuses queue directories
below world-writable directories such as /tmp): postfix's own config_directory, queue and data
directories, dovecot's base_dir and config, and the two log files the tests read. Nothing in
/etc/postfix or /etc/dovecot is touched, and the system postfix (if any) keeps running.

Listeners (ports chosen free at start, all on 127.0.0.1):
  smtp        smtpd with dovecot SASL, anvil limits, helo checks, unauth pipelining reject
  postscreen  postscreen with pregreet + deep protocol tests in front of a second smtpd
  imap, pop3  dovecot login processes (plaintext allowed, no TLS)

Options: `sasl_disable=True` wires in the two lines that mailban's sasl-disable action needs
(actions.d/sasl-disable.toml): the dovecot deny passdb (always present here, file `deny`) and
`check_sasl_access hash:ETC/mailban_sasl_access` first in smtpd_relay_restrictions and
smtpd_recipient_restrictions. `main_extra` adds or overrides main.cf settings, `dovecot_extra`
is appended to dovecot.conf, `extra_users` (name -> password) adds accounts, `listen` is where
dovecot's IMAP and POP3 listen (a dovecot address list that must include 127.0.0.1, e.g.
"127.0.0.1, ::" for a test in its own network namespace). Local mail to
`mbadmin@mail.example.test` is appended to the mbox file `admin_mbox` (for notifications).

Recipe: /work/shared/REAL-MTA.md sections 2 and 4 (CI speed-ups included).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

BASE = Path("/var/lib/mbmta")
UNKNOWN_CLIENT = "127.0.0.28"
UNKNOWN_REVERSE = "127.0.0.29"
USERS = {"alice@example.test": "S3cret-alice", "bob@example.test": "S3cret-bob"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kw)


def start_daemon(argv: list[str], errlog: Path) -> None:
    """Run a command that daemonizes: its children keep stdio open, so never capture it."""
    with open(errlog, "ab") as err:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=60).returncode
    if rc != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {rc}): {errlog.read_text(errors='replace')[-2000:]}")


def ensure_vmail() -> None:
    try:
        pwd.getpwnam("vmail")
    except KeyError:
        run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "vmail"])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True



def main_cf(etc: Path, own: dict[str, str], sasl_map: Path | None, extra: dict[str, str]) -> str:
    """The main.cf both harnesses run (Debian 12 here, Debian 13 in tests/mta/trixie.py): every
    category the tests provoke, on loopback, without DNS. `etc` is the configuration directory as
    postfix sees it, `own` the harness's own keys (directories, log file), `sasl_map` the
    sasl-disable map to check first (None: not configured), `extra` a test's own keys, last."""
    main = {
        "compatibility_level": "3.6",
        "myhostname": "mail.example.test",
        "mydomain": "example.test",
        "myorigin": "mail.example.test",
        "mydestination": "mail.example.test, localhost",
        "mynetworks": "127.0.0.1/32",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "alias_maps": f"hash:{etc}/aliases",
        "alias_database": f"hash:{etc}/aliases",
        "syslog_name": "postfix",
        "smtpd_peername_lookup": "no",
        "smtp_dns_support_level": "disabled",
        "default_transport": "smtp",
        "relay_transport": "smtp",
        "relayhost": "[127.0.0.1]:1",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": "private/auth",
        "smtpd_sasl_security_options": "noanonymous",
        "broken_sasl_auth_clients": "yes",
        "smtpd_helo_required": "yes",
        # real "cannot find your hostname" rejects without DNS: with peername lookups off,
        # every client is "unknown"; the map applies the restriction to two test addresses
        "smtpd_client_restrictions": f"check_client_access cidr:{etc}/client_access",
        "smtpd_helo_restrictions": "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname",
        "smtpd_data_restrictions": "reject_unauth_pipelining",
        "smtpd_relay_restrictions": f"permit_mynetworks, check_sasl_access hash:{etc}/sasl_access, "
        "permit_sasl_authenticated, reject_unauth_destination",
        "smtpd_client_connection_rate_limit": "5",
        "anvil_rate_time_unit": "60s",
        "smtpd_client_event_limit_exceptions": "127.0.0.1",
        "smtpd_soft_error_limit": "3",
        "smtpd_hard_error_limit": "5",
        "smtpd_error_sleep_time": "0",
        # postscreen: every loopback client is a stranger (the default permits mynetworks)
        "postscreen_access_list": "",
        "postscreen_greet_action": "enforce",
        "postscreen_greet_wait": "1s",
        "postscreen_pipelining_enable": "yes",
        "postscreen_pipelining_action": "enforce",
        "postscreen_non_smtp_command_enable": "yes",
        "postscreen_non_smtp_command_action": "drop",
        "postscreen_bare_newline_enable": "yes",
        "postscreen_bare_newline_action": "enforce",
        "postscreen_command_count_limit": "5",
        "postscreen_dnsbl_sites": "",
        **own,
    }
    if sasl_map is not None:
        first = f"check_sasl_access hash:{sasl_map}"
        main["smtpd_relay_restrictions"] = f"{first}, {main['smtpd_relay_restrictions']}"
        main["smtpd_recipient_restrictions"] = f"{first}, permit"
    main.update(extra)
    return "".join(f"{k} = {v}\n" for k, v in main.items())


def dovecot_services(imap_port: int, pop3_port: int, auth_socket: str, address: str | None) -> str:
    """The service blocks of both harnesses' dovecot.conf (2.3 here, 2.4 in tests/mta/trixie.py,
    whose listeners take no `address`): IMAP and POP3 on loopback ports, the SASL socket postfix
    uses, and CI speed-ups (no failure delay, no per-IP auth penalty)."""
    at = f"    address = {address}\n" if address else ""
    return f"""\
service imap-login {{
  inet_listener imap {{
{at}    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
{at}    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service auth {{
  unix_listener {auth_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
# CI speed-ups: no failure delay, no per-IP auth penalty
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}"""


def master_cf(smtp_port: int, postscreen_port: int) -> str:
    """The master.cf both harnesses run (Debian 12 here, Debian 13 in tests/mta/trixie.py): smtpd
    and postscreen on loopback ports, and the chroot column "n" everywhere (the private queue
    directory holds no /etc copies)."""
    return f"""\
127.0.0.1:{smtp_port} inet n - n - - smtpd
127.0.0.1:{postscreen_port} inet n - n - 1 postscreen
smtpd     pass  - - n - - smtpd -o syslog_name=postfix/ps
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
smtp      unix  - - n - - smtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

class Service:
    """A started-for-the-test MTA as a context manager: start(), and cleanup() afterwards even
    when the start itself failed half-way (subclasses provide both)."""

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _options(self, prefix: str, sasl_disable: bool, main_extra: dict[str, str] | None,
                 dovecot_extra: str, extra_users: dict[str, str] | None) -> None:
        """The postfix + dovecot harnesses' options (Debian 12 here, 13 in trixie.py), and their
        work directory under BASE."""
        self.sasl_disable = sasl_disable
        self.users = {**USERS, **(extra_users or {})}
        self.dovecot_extra = dovecot_extra
        self.main_extra = dict(main_extra or {})
        BASE.mkdir(mode=0o755, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=BASE))
        self.work.chmod(0o755)


class PostfixDovecot(Service):
    def __init__(self, sasl_disable: bool = False, main_extra: dict[str, str] | None = None,
                 dovecot_extra: str = "", extra_users: dict[str, str] | None = None,
                 listen: str = "127.0.0.1") -> None:
        self._options("pf-", sasl_disable, main_extra, dovecot_extra, extra_users)
        self.listen = listen
        self.etc = self.work / "etc"
        self.queue = self.work / "spool"
        self.data = self.work / "data"
        self.dovecot_run = self.work / "dovecot"
        self.maillog = self.work / "postfix.log"
        self.dovecot_log = self.work / "dovecot.log"
        self.smtp_port = free_port()
        self.postscreen_port = free_port()
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.dovecot_pid: int | None = None
        self.postfix_started = False
        self.deny_file = self.work / "deny"
        self.sasl_map = self.etc / "mailban_sasl_access"
        self.admin_mbox = self.work / "admin.mbox"

    # --- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        ensure_vmail()
        for d in (self.etc, self.queue, self.data, self.dovecot_run, self.work / "mail"):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        shutil.chown(self.work / "mail", "vmail", "vmail")
        etc, w = self.etc, self.work
        (etc / "aliases").write_text(f"postmaster: root\nmbadmin: {self.admin_mbox}\n")
        # local(8) writes alias file deliveries with default_privs (nobody)
        self.admin_mbox.write_text("")
        shutil.chown(self.admin_mbox, "nobody", "nogroup")
        self.admin_mbox.chmod(0o600)
        (etc / "sasl_access").write_text("")
        self.sasl_map.write_text("")
        (etc / "client_access").write_text(
            f"{UNKNOWN_CLIENT}/32 reject_unknown_client_hostname\n"
            f"{UNKNOWN_REVERSE}/32 reject_unknown_reverse_client_hostname\n"
        )
        own = {
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": f"/var, /dev/stdout, {w}",
            "disable_dns_lookups": "yes",
            "postscreen_cache_map": f"btree:{self.data}/postscreen_cache",
        }
        (etc / "main.cf").write_text(main_cf(etc, own, self.sasl_map if self.sasl_disable else None, self.main_extra))
        # chroot column "n" everywhere: the private queue directory holds no /etc copies
        master = master_cf(self.smtp_port, self.postscreen_port)
        (etc / "master.cf").write_text(master)
        run(["postalias", "-c", str(etc), f"hash:{etc}/aliases"])
        run(["postmap", "-c", str(etc), f"hash:{etc}/sasl_access"])
        run(["postmap", "-c", str(etc), f"hash:{self.sasl_map}"])

        (self.work / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        )
        (self.work / "deny").write_text("")
        for f in ("users", "deny"):
            shutil.chown(self.work / f, "root", "dovecot")
            (self.work / f).chmod(0o640)
        vm = pwd.getpwnam("vmail")
        (self.work / "dovecot.conf").write_text(f"""\
instance_name = mbmta-{self.work.name}
protocols = imap pop3
listen = {self.listen}
base_dir = {self.dovecot_run}/
state_dir = {self.work}/dovecot-state
log_path = {self.dovecot_log}
info_log_path = {self.dovecot_log}
auth_verbose = yes
auth_mechanisms = plain login
disable_plaintext_auth = no
ssl = no
first_valid_uid = {vm.pw_uid}
mail_location = maildir:{self.work}/mail/%n
passdb {{
  driver = passwd-file
  args = {self.work}/deny
  deny = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.work}/users
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={self.work}/mail/%n
}}
{dovecot_services(self.imap_port, self.pop3_port, f"{self.queue}/private/auth", self.listen)}
{self.dovecot_extra}
""")
        (self.work / "dovecot-state").mkdir(exist_ok=True)

    # --- start / stop ------------------------------------------------------------------------
    def start(self) -> None:
        self.write_config()
        # postfix first: `postfix start` creates the queue subdirectories (private/ for the socket)
        run(["postfix", "-c", str(self.etc), "check"])
        start_daemon(["postfix", "-c", str(self.etc), "start"], self.work / "start.err")
        self.postfix_started = True
        start_daemon(["dovecot", "-c", str(self.work / "dovecot.conf")], self.work / "start.err")
        pidfile = self.dovecot_run / "master.pid"
        end = time.monotonic() + 10
        while not pidfile.exists():
            if time.monotonic() > end:
                raise RuntimeError("dovecot did not write its pid file")
            time.sleep(0.02)
        self.dovecot_pid = int(pidfile.read_text().split()[0])
        for port in (self.smtp_port, self.postscreen_port, self.imap_port, self.pop3_port):
            wait_port(port)
        end = time.monotonic() + 10
        while not (self.queue / "private" / "auth").exists():
            if time.monotonic() > end:
                raise RuntimeError("dovecot did not create the postfix auth socket")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.postfix_started or (self.queue / "pid" / "master.pid").exists():
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
            pidfile = self.queue / "pid" / "master.pid"
            end = time.monotonic() + 10
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError):
                pid = None
            while pid and pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            self.postfix_started = False
        if self.dovecot_pid is None:  # start failed before the pid was read
            try:
                self.dovecot_pid = int((self.dovecot_run / "master.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        if self.dovecot_pid:
            try:
                os.kill(self.dovecot_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.monotonic() + 10
            while pid_alive(self.dovecot_pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid_alive(self.dovecot_pid):
                os.kill(self.dovecot_pid, signal.SIGKILL)
            self.dovecot_pid = None

    def cleanup(self, keep_logs_in: Path | None = None) -> None:
        """Stop everything; copy the logs somewhere (e.g. pytest's tmp_path), delete the rest."""
        self.stop()
        if keep_logs_in is not None:
            for f in (self.maillog, self.dovecot_log):
                if f.exists():
                    shutil.copy(f, keep_logs_in / f.name)
        shutil.rmtree(self.work, ignore_errors=True)

