"""Outbound abuse end to end: the real mailban daemon on a real postfix + dovecot.

A private postfix + dovecot (tests/mta/postfix_dovecot.py, relayhost on a closed loopback port so
that remote mail stays deferred in the queue) with the two sasl-disable lines wired in, and
`python -m mailban run` following its logs with admin actions.d overrides that reach that
instance (`-c DIR`). Then:
- alice sends over the per-user threshold: her AUTH and IMAP fail, her deferred mail is held,
  the admin gets a mail with the key, the count and the undo command; bob is untouched;
  `mailban unban --user` gives everything back;
- a local uid (a system user created here) sends through `sendmail -C DIR` (pickup) over the
  per-uid threshold: its mail is held, including what it sends after the decision;
  `mailban unban --uid` releases it;
- hostile user names: no command runs, no map line is written for names that cannot be written
  safely, and a ban of the user "*" does not kick everyone's IMAP sessions.

Every test runs on Debian 12's programs (bookworm: postfix 3.7, dovecot 2.3, installed on this
host) and on Debian 13's (trixie: postfix 3.10, dovecot 2.4, chrooted in a network namespace,
tests/mta/trixie.py): the actions reach the chrooted programs through `chroot ROOT ...` argv lists,
the clients open their sockets inside the namespace, and dovecot 2.4 reads the deny passdb in its
2.4 form (docs/outbound.md).

Set MAILBAN_MTA_KEEP_LOGS=DIR to keep the logs the MTA wrote.
"""

from __future__ import annotations

import imaplib
import json
import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.mta import clients as c
from tests.mta import trixie

pytestmark = [pytest.mark.mta, pytest.mark.root]

REPO = Path(__file__).resolve().parents[1]
ALICE, ALICE_PW = "alice@example.test", "S3cret-alice"
BOB, BOB_PW = "bob@example.test", "S3cret-bob"
# A SASL account whose name carries shell syntax and a space: it really authenticates (dovecot's
# passwd-file cannot hold a name with quotes; those are banned by hand below).
HOSTILE = "evil $(touch /tmp/mb-pwned-1);`touch /tmp/mb-pwned-2`@example.test"
HOSTILE_PW = "S3cret-evil"
EVIL_SENDER = "evil@example.test"
# Names banned by hand through the control socket.
HOSTILE_MANUAL = ["semi;colon$(touch${IFS}/tmp/mb-pwned-3)@example.test", "quo\"te'@example.test",
                  "with space@example.test"]
PWNED = [Path(f"/tmp/mb-pwned-{i}") for i in (1, 2, 3)]
USER_LIMIT = 20
UID_LIMIT = 10
PHP_USER = "mbphp"
H = "127.0.0.1"
NFT_TABLE = "mailban_outbound_e2e"


def _skip_unless_ready(version: str = "bookworm") -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: starts postfix/dovecot and creates a system user")
    for tool in ("unshare", "useradd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")
    reason = trixie.skip_reason(version)
    if reason:
        pytest.skip(reason)


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for: {what}")
        time.sleep(every)


class Env:
    """The MTA, the daemon and the helpers the tests use on them."""

    def __init__(self, mta: Any, tmp: Path) -> None:
        self.mta = mta
        self.tmp = tmp
        self.etc = str(mta.etc)
        self.trixie = hasattr(mta, "inside")  # the Debian 13 root: programs run chrooted in it
        # dovecot's configuration as doveadm (run chrooted on trixie) names it
        self.dovecot_conf = ("/" + str(mta.dovecot_conf.relative_to(mta.root)) if self.trixie
                             else str(mta.work / "dovecot.conf"))
        self.config = tmp / "mailban.toml"
        self.proc: subprocess.Popen | None = None
        self.php_uid: int | None = None

    def tool(self, name: str, *args: str) -> list[str]:
        """argv of one of the MTA's programs, on its configuration."""
        if self.trixie:
            return self.mta.tool(name, *args)
        return [name, "-C" if name.endswith("sendmail") else "-c", self.etc, *args]

    def net(self):
        """Open client sockets where the MTA listens (trixie: inside its network namespace)."""
        return trixie.clients_of(self.mta)

    def smtp(self, src: str) -> smtplib.SMTP:
        with self.net():
            return smtplib.SMTP(H, self.mta.smtp_port, source_address=(src, 0), timeout=10)

    # ---- configuration and daemon ------------------------------------------------------------
    def write_config(self) -> None:
        t, m = self.tmp, self.mta
        argv = json.dumps
        if self.trixie:
            kick = m.tool("doveadm", "-c", self.dovecot_conf, "kick")
            doveconf = m.tool("doveconf", "-c", self.dovecot_conf)
            reload = m.tool("postfix", "reload")
        else:
            kick = ["doveadm", "-c", self.dovecot_conf, "kick"]
            doveconf = ["doveconf", "-c", self.dovecot_conf]
            reload = ["postfix", "-c", self.etc, "reload"]
        (t / "actions.d").mkdir()
        (t / "actions.d" / "sasl-disable.toml").write_text(f"""\
[action]
type = "sasl-disable"
dovecot_deny_file = "{m.deny_file}"
postfix_map = "{m.sasl_map}"
map_type = "hash"
reject_text = "account disabled by mailban, contact support"
postmap = {argv(self.tool("postmap"))}
postfix_reload = {argv(reload)}
kick = {argv(kick)}
doveconf = {argv(doveconf)}
""")
        (t / "actions.d" / "queue-hold.toml").write_text(f"""\
[action]
type = "queue-hold"
postqueue = {argv(self.tool("postqueue"))}
postsuper = {argv(self.tool("postsuper"))}
postcat = {argv(self.tool("postcat"))}
""")
        # The daemon runs in the host's network namespace (the MTA's queue tools, pickup and
        # dovecot's sockets are the host's) and always sets up its nft action (manual bans go
        # through it): a table of the test's own, deleted when the daemon stops.
        (t / "actions.d" / "nft.toml").write_text(f"""\
[action]
type = "nft"
table = "{NFT_TABLE}"
""")
        (t / "actions.d" / "notify.toml").write_text(f"""\
[action]
type = "notify"
to = "mbadmin@mail.example.test"
sender = "mailban@mail.example.test"
sendmail = {argv(self.tool("/usr/sbin/sendmail"))}
interval = "1s"
max_lines = 3
hostname = "mail.example.test"
""")
        self.config.write_text(f"""\
[mailban]
logs = ["{m.maillog}", "{m.dovecot_log}"]
state_dir = "{t / 'state'}"
socket = "{t / 'mailban.sock'}"
read_from = "beginning"
loglevel = "debug"

[jail.outbound-user]
kinds = ["submission"]
key = "user"
findtime = "1h"
maxretry = {USER_LIMIT}
bantime = "1d"
actions = ["notify", "queue-hold", "sasl-disable"]

[jail.outbound-uid]
kinds = ["submission"]
key = "uid"
findtime = "1h"
maxretry = {UID_LIMIT}
bantime = "1d"
# root: mailban's own notifications enter through pickup as uid 0
ignorekeys = ["0"]
actions = ["notify", "queue-hold"]
""")
        check = self.mailban("check")
        assert check.returncode == 0, check.stdout + check.stderr

    def start_daemon(self) -> None:
        self.daemon_log = open(self.tmp / "daemon.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailban", "run", "--config", str(self.config)],
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.daemon_log,
                                     stderr=subprocess.STDOUT)
        wait_for("the daemon's control socket", lambda: self.proc.poll() is not None
                 or self.mailban("status", "--json").returncode == 0, timeout=20, every=0.1)
        assert self.proc.poll() is None, self.daemon_output()

    def stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.daemon_log.close()
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)

    def daemon_output(self) -> str:
        return (self.tmp / "daemon.log").read_text(errors="replace")[-4000:]

    def mailban(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailban", *args, "--config", str(self.config)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    def bans(self) -> list[dict]:
        out = self.mailban("list", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def ban_of(self, key_type: str, key: str) -> dict | None:
        return next((b for b in self.bans() if b["key_type"] == key_type and b["key"] == key), None)

    # ---- the MTA -----------------------------------------------------------------------------
    def queue(self) -> list[dict]:
        out = subprocess.run(self.tool("postqueue", "-j"), capture_output=True, text=True, timeout=30)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def queued_from(self, sender: str) -> list[dict]:
        return [q for q in self.queue() if q["sender"] == sender]

    def auth(self, user: str, password: str, src: str) -> tuple[bool, str]:
        """(AUTH accepted, the reply)."""
        try:
            with self.smtp(src) as s:
                s.ehlo("client.example.test")
                code, text = s.login(user, password)
                return True, f"{code} {text.decode(errors='replace')}"
        except smtplib.SMTPAuthenticationError as exc:
            return False, f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"

    def send(self, user: str, password: str, src: str, count: int, rcpt_domain: str = "remote.example.net",
             after_each: Callable[[int], None] | None = None, sender: str | None = None) -> int:
        """Authenticated sends, one message per transaction; returns how many were accepted."""
        accepted = 0
        with self.smtp(src) as s:
            s.ehlo("client.example.test")
            s.login(user, password)
            for i in range(count):
                s.sendmail(sender or user, [f"r{i}@{rcpt_domain}"], f"Subject: message {i}\r\n\r\nbody {i}\r\n".encode())
                accepted += 1
                if after_each:
                    after_each(accepted)
        return accepted

    def can_send(self, user: str, password: str, src: str) -> bool:
        """AUTH and one RCPT to a remote domain accepted (nothing is sent: RSET, QUIT)."""
        try:
            with self.smtp(src) as s:
                s.ehlo("client.example.test")
                s.login(user, password)
                s.mail(user)
                code, _text = s.rcpt("probe@remote.example.net")
                s.rset()
                return code == 250
        except smtplib.SMTPAuthenticationError:
            return False

    def imap(self, user: str, password: str, src: str) -> bool:
        with self.net():
            return c.imap_login(H, self.mta.imap_port, src, user, password)

    def admin_mail(self) -> str:
        return self.mta.admin_mbox.read_text(errors="replace")

    # ---- a local user sending through pickup -------------------------------------------------
    def create_php_user(self) -> int:
        if self.trixie:  # a user of the root: pickup logs the uid the root's passwd gives it
            subprocess.run(self.mta.tool("useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", PHP_USER),
                           check=True, capture_output=True)
            self.php_uid = int(subprocess.run(self.mta.tool("id", "-u", PHP_USER), check=True, capture_output=True,
                                              text=True).stdout)
            return self.php_uid
        try:
            pwd.getpwnam(PHP_USER)
            subprocess.run(["userdel", PHP_USER], capture_output=True)
        except KeyError:
            pass
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", PHP_USER],
                       check=True, capture_output=True)
        self.php_uid = pwd.getpwnam(PHP_USER).pw_uid
        # postfix's set-gid postdrop lets a non-root user name another config directory only when
        # /etc/postfix/main.cf lists it: give the sending process its own mount namespace with a
        # copy that does, and leave the real /etc/postfix alone.
        conf = self.tmp / "system-main.cf"
        conf.write_text(Path("/etc/postfix/main.cf").read_text()
                        + f"\nalternate_config_directories = {self.etc}\n")
        return self.php_uid

    def sendmail_as_php(self, count: int, start: int = 0) -> None:
        assert self.php_uid is not None
        if self.trixie:
            for n in range(start, start + count):
                subprocess.run(["chroot", f"--userspec={PHP_USER}:{PHP_USER}", str(self.mta.root),
                                "/usr/sbin/sendmail", "-i", "-f", "www@example.test", f"victim{n}@remote.example.net"],
                               input=f"Subject: newsletter {n}\n\nbuy now {n}\n".encode(), check=True,
                               capture_output=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            return
        helper = ("import os, subprocess, sys\n"
                  "conf, uid, gid, start, count, *argv = sys.argv[1:]\n"
                  "subprocess.run(['mount', '--bind', conf, '/etc/postfix/main.cf'], check=True)\n"
                  "os.setgroups([]); os.setgid(int(gid)); os.setuid(int(uid))\n"
                  "for n in range(int(start), int(start) + int(count)):\n"
                  "    msg = f'Subject: newsletter {n}\\n\\nbuy now {n}\\n'.encode()\n"
                  "    subprocess.run(argv + [f'victim{n}@remote.example.net'], input=msg, check=True)\n")
        gid = pwd.getpwnam(PHP_USER).pw_gid
        subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", helper,
                        str(self.tmp / "system-main.cf"), str(self.php_uid), str(gid), str(start), str(count),
                        "/usr/sbin/sendmail", "-C", self.etc, "-i", "-f", "www@example.test"],
                       check=True, capture_output=True, timeout=60,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def remove_php_user(self) -> None:
        if self.php_uid is not None and not self.trixie:  # trixie: the overlay goes with its user
            subprocess.run(["userdel", PHP_USER], capture_output=True)
            self.php_uid = None


@pytest.fixture(scope="module", params=trixie.VERSIONS)
def env(request, tmp_path_factory) -> Any:
    version = request.param
    _skip_unless_ready(version)

    tmp = tmp_path_factory.mktemp(f"outbound-{version}")
    # anvil's connection rate limit would refuse the tests' polling connections
    # (and dovecot's default auth_username_chars would refuse the hostile account's name)
    mta = trixie.new_mta(version, sasl_disable=True,
                         main_extra={"smtpd_client_event_limit_exceptions": "127.0.0.0/8"},
                         dovecot_extra="auth_username_chars =\n", extra_users={HOSTILE: HOSTILE_PW})
    e = Env(mta, tmp)
    for p in PWNED:
        p.unlink(missing_ok=True)
    try:
        mta.start()
        e.write_config()
        e.start_daemon()
        yield e
    finally:
        e.stop_daemon()
        e.remove_php_user()
        mta.cleanup(keep_logs_in=tmp)
        dest = os.environ.get("MAILBAN_MTA_KEEP_LOGS")
        if dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            for name in ("postfix.log", "dovecot.log", "daemon.log"):
                if (tmp / name).exists():
                    prefix = "trixie-" if version == "trixie" else ""
                    shutil.copy(tmp / name, Path(dest) / f"{prefix}outbound-{name}")


# --------------------------------------------------------------------------------------------------
def test_user_over_threshold_is_disabled_held_and_reported(env: Env) -> None:
    # ordinary traffic first: bob sends a little, an unauthenticated client delivers inbound mail
    assert env.send(BOB, BOB_PW, "127.0.0.61", 3) == 3
    with env.net():
        c.rcpts(H, env.mta.smtp_port, "127.0.0.62", "friend@elsewhere.example", ["mbadmin@mail.example.test"])
    with env.smtp("127.0.0.62") as s:
        s.sendmail("friend@elsewhere.example", ["mbadmin@mail.example.test"], b"Subject: inbound\r\n\r\nhello\r\n")
    assert env.auth(ALICE, ALICE_PW, "127.0.0.63")[0] and env.imap(ALICE, ALICE_PW, "127.0.0.63")
    # alice (or the thief) has an IMAP session open: the decision closes it (`doveadm kick`)
    session = _imap_session(env, ALICE, ALICE_PW, "127.0.0.63")
    assert session.noop()[0] == "OK"

    # alice's password is stolen: the spammer sends up to the threshold in one session
    crossed: list[float] = []
    env.send(ALICE, ALICE_PW, "127.0.0.64", USER_LIMIT,
             after_each=lambda n: crossed.append(time.monotonic()) if n == USER_LIMIT else None)
    t0 = crossed[0]

    marks: dict[str, float] = {}

    def auth_refused() -> float | None:
        if "deny" not in marks and ALICE in env.mta.deny_file.read_text():
            marks["deny"] = time.monotonic() - t0
        if "send" not in marks and not env.can_send(ALICE, ALICE_PW, "127.0.0.65"):
            marks["send"] = time.monotonic() - t0
        ok, _reply = env.auth(ALICE, ALICE_PW, "127.0.0.65")
        return None if ok else time.monotonic()

    t_auth = wait_for("alice's AUTH to fail", auth_refused, timeout=10, every=0.02)

    def all_held() -> float | None:
        mine = env.queued_from(ALICE)
        return time.monotonic() if len(mine) == USER_LIMIT and all(q["queue_name"] == "hold" for q in mine) else None

    t_hold = wait_for(f"alice's {USER_LIMIT} messages on hold", all_held, timeout=10, every=0.02)
    print(f"\n[outbound-user] threshold-crossing message -> AUTH refused: {t_auth - t0:.3f}s, "
          f"-> all {USER_LIMIT} messages held: {t_hold - t0:.3f}s (deny file written: {marks.get('deny', -1):.3f}s, "
          f"first refused AUTH or RCPT: {marks.get('send', t_auth - t0):.3f}s)")

    ok, reply = env.auth(ALICE, ALICE_PW, "127.0.0.65")
    assert not ok and reply.startswith("535"), reply
    assert not env.imap(ALICE, ALICE_PW, "127.0.0.65")

    def kicked() -> bool:
        try:
            session.noop()
        except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
            return True
        return False
    wait_for("alice's open IMAP session to be kicked", kicked, timeout=5)
    assert env.mta.deny_file.read_text().splitlines() == [ALICE]
    q = subprocess.run(env.tool("postmap", "-q", ALICE, f"hash:{env.mta.sasl_map}"),
                       capture_output=True, text=True)
    assert q.stdout.startswith("REJECT account disabled by mailban"), q
    # bob is untouched: he logs in, sends, and his mail is not held
    assert env.auth(BOB, BOB_PW, "127.0.0.61")[0] and env.imap(BOB, BOB_PW, "127.0.0.61")
    assert env.send(BOB, BOB_PW, "127.0.0.61", 1) == 1
    assert all(q["queue_name"] != "hold" for q in env.queued_from(BOB))

    ban = env.ban_of("user", ALICE)
    assert ban is not None, env.bans()
    assert ban["jail"] == "outbound-user" and ban["count"] == USER_LIMIT
    assert ban["actions"] == ["notify", "queue-hold", "sasl-disable"]
    assert ban["lines"] and all(f"sasl_username={ALICE}" in line for line in ban["lines"])
    assert "127.0.0.64" in ban["ips"]
    assert not any(b["key"] == BOB for b in env.bans())

    mail = wait_for("the admin's notification", lambda: "made these decisions" in env.admin_mail() and env.admin_mail())
    assert f"* user {ALICE} -- jail outbound-user" in mail
    assert f"{USER_LIMIT} events within 1h" in mail
    assert f"undo: mailban unban --user {ALICE}" in mail
    status = json.loads(env.mailban("status", "--json").stdout)
    assert not [a for a in status["actions"] if a["error"]], status["actions"]


def test_unban_user_gives_everything_back(env: Env) -> None:
    assert env.ban_of("user", ALICE) is not None
    out = env.mailban("unban", "--user", ALICE)
    assert out.returncode == 0 and "unbanned user" in out.stdout, out.stdout + out.stderr
    # dovecot looks at the deny file's mtime at most once a second (passwd-file sync)
    wait_for("alice's AUTH to work again", lambda: env.auth(ALICE, ALICE_PW, "127.0.0.66")[0], timeout=5)
    assert env.imap(ALICE, ALICE_PW, "127.0.0.66")
    mine = env.queued_from(ALICE)
    assert len(mine) == USER_LIMIT and all(q["queue_name"] != "hold" for q in mine), mine
    assert env.mta.deny_file.read_text() == ""
    assert ALICE not in env.mta.sasl_map.read_text()
    assert env.ban_of("user", ALICE) is None
    # she can send again, and her new mail is not held
    assert env.send(ALICE, ALICE_PW, "127.0.0.66", 1) == 1


def test_uid_over_threshold_is_held_including_later_mail(env: Env) -> None:
    uid = env.create_php_user()
    sender = "www@example.test"
    t0 = time.monotonic()
    env.sendmail_as_php(UID_LIMIT)
    ban = wait_for(f"a ban of uid {uid}", lambda: env.ban_of("uid", str(uid)))
    t_ban = time.monotonic()
    assert ban["jail"] == "outbound-uid" and ban["count"] == UID_LIMIT
    assert all(f"uid={uid} from=<{sender}>" in line for line in ban["lines"])

    def held(n: int) -> Callable[[], float | None]:
        def check() -> float | None:
            mine = env.queued_from(sender)
            return time.monotonic() if len(mine) == n and all(q["queue_name"] == "hold" for q in mine) else None
        return check

    t_hold = wait_for(f"uid {uid}'s {UID_LIMIT} messages on hold", held(UID_LIMIT))
    print(f"\n[outbound-uid] {UID_LIMIT} sendmail(1) calls took {t_ban - t0:.3f}s until the ban was listed; "
          f"all held {t_hold - t0:.3f}s after the first call")
    # the script goes on: what it queues after the decision is held on arrival
    env.sendmail_as_php(3, start=UID_LIMIT)
    wait_for("the 3 later messages held as well", held(UID_LIMIT + 3))
    assert "uid " + str(uid) in env.admin_mail()
    out = env.mailban("unban", "--uid", str(uid))
    assert out.returncode == 0, out.stderr
    mine = env.queued_from(sender)
    assert len(mine) == UID_LIMIT + 3 and all(q["queue_name"] != "hold" for q in mine), mine


def test_dovecot_check_gives_the_deny_passdb_in_the_versions_syntax(env: Env) -> None:
    """The daemon's sasl-disable found its deny passdb through the real doveconf (no warning in
    status, checked above); on a configuration without it, the block to add is 2.3's or 2.4's."""
    from mailban.actions.sasl_disable import SaslDisableAction

    conf = Path(env.dovecot_conf)
    host_conf = env.mta.root / str(conf).lstrip("/") if env.trixie else conf
    stripped = host_conf.with_name("no-deny.conf")
    stripped.write_text(host_conf.read_text().replace("  deny = yes\n", ""))
    base = env.mta.tool("doveconf") if env.trixie else ["doveconf"]
    opts = {"dovecot_deny_file": str(env.mta.deny_file), "postfix_map": "", "kick": []}
    ok = SaslDisableAction("s", {**opts, "doveconf": [*base, "-c", str(conf)]})
    assert ok.check_dovecot() is None
    bad = SaslDisableAction("s", {**opts, "doveconf": [*base, "-c", str(conf.with_name("no-deny.conf"))]})
    warning = bad.check_dovecot() or ""
    if env.trixie:
        # (the action names its own path for the file: here the root's host path, which the root's
        # symlink makes valid inside it too)
        assert warning.startswith("dovecot 2.4.1") and "passdb mailban-deny { driver = passwd-file " \
            f"passwd_file_path = {env.mta.deny_file} deny = yes }}" in warning, warning
    else:
        assert warning.startswith("dovecot 2.3.") and \
            f"passdb {{ driver = passwd-file args = {env.mta.deny_file} deny = yes }}" in warning, warning


def _imap_session(env: Env, user: str, password: str, src: str) -> imaplib.IMAP4:
    class IMAP(imaplib.IMAP4):
        def _create_socket(self, timeout=None):  # type: ignore[override]
            with env.net():
                return c.connect(H, env.mta.imap_port, src)
    m = IMAP(H, env.mta.imap_port)
    m.login(user, password)
    return m


def test_hostile_user_names_run_nothing_and_write_nothing(env: Env) -> None:
    # a real account with shell syntax, quotes and a space in its name goes over the threshold
    assert env.send(HOSTILE, HOSTILE_PW, "127.0.0.67", USER_LIMIT, sender=EVIL_SENDER) == USER_LIMIT
    ban = wait_for("the hostile account's decision", lambda: env.ban_of("user", HOSTILE))
    assert ban["count"] == USER_LIMIT
    # its mail is held all the same (found through the envelopes' sasl_username)
    wait_for("the hostile account's mail on hold", lambda: len(env.queued_from(EVIL_SENDER)) == USER_LIMIT
             and all(q["queue_name"] == "hold" for q in env.queued_from(EVIL_SENDER)))
    # more hostile names, banned by hand through the control socket (argv, no shell), in the jail
    # whose actions disable accounts (the first jail counting per user may be another one)
    for name in HOSTILE_MANUAL:
        out = env.mailban("ban", "--user", name, "--jail", "outbound-user", "--for", "1h")
        assert out.returncode == 0, out.stderr
    # a user named "*" (doveadm kick takes masks): bob's open IMAP session must survive its ban
    session = _imap_session(env, BOB, BOB_PW, "127.0.0.68")
    try:
        for name in ("*", "127.0.0.0/8"):
            out = env.mailban("ban", "--user", name, "--jail", "outbound-user", "--for", "1h")
            assert out.returncode == 0, out.stderr
        wait_for("every decision listed", lambda: {HOSTILE, "*", "127.0.0.0/8", *HOSTILE_MANUAL}
                 <= {b["key"] for b in env.bans()})
        assert session.noop()[0] == "OK", "bob's IMAP session was kicked by a ban of another name"
    finally:
        try:
            session.logout()
        except Exception:
            pass
    # the daemon survived, nothing was executed, and no line was written for an unsafe name
    assert env.proc is not None and env.proc.poll() is None, env.daemon_output()
    assert not [p for p in PWNED if p.exists()], "a hostile user name was executed"
    deny = env.mta.deny_file.read_text().splitlines()
    sasl_map = env.mta.sasl_map.read_text()
    for name in (HOSTILE, "with space@example.test", "quo\"te'@example.test"):
        assert name not in deny and name not in sasl_map
        assert name.split(" ")[0] not in deny, "a name cut at its space was written"
    # shell syntax without whitespace or quotes is an inert token in both files (no shell ever
    # reads them), so such an account is disabled like any other
    for name in ("semi;colon$(touch${IFS}/tmp/mb-pwned-3)@example.test",):
        assert name in deny
        q = subprocess.run(env.tool("postmap", "-q", name, f"hash:{env.mta.sasl_map}"),
                           capture_output=True, text=True)
        assert q.stdout.startswith("REJECT"), q
    # the refusal is visible to the admin
    status = json.loads(env.mailban("status", "--json").stdout)
    errors = {a["name"]: a["warning"] for a in status["actions"]}  # refused names: a warning, not a failure
    assert errors["sasl-disable"] and "unsafe names" in errors["sasl-disable"], errors
    assert HOSTILE in errors["sasl-disable"] and not [a for a in status["actions"] if a["pending"]], status
    mail = env.admin_mail()
    assert "undo: mailban unban --user 'evil $(touch /tmp/mb-pwned-1);" in mail
    out = env.mailban("unban", "--all")
    assert out.returncode == 0, out.stderr
    assert env.mta.deny_file.read_text() == "" and env.bans() == []
    status = json.loads(env.mailban("status", "--json").stdout)
    assert not [a for a in status["actions"] if a["error"] or a["pending"]], status["actions"]
    assert all(q["queue_name"] != "hold" for q in env.queue())


# --------------------------------------------------------------------------------------------------
# Account guessing from real lines: 8 addresses, 2 guesses each against alice (SMTP AUTH and
# IMAP), while alice herself mistypes once and then logs in. The daemon's pipeline decides through
# `mailban replay` (loopback is never banned, so a copy of the logs maps 127.0.0.N to 198.51.100.N
# to see the per-address decisions; the lines are otherwise untouched).
ATTACKERS = [f"127.0.0.{n}" for n in range(40, 48)]
OWNER = "127.0.0.50"


def _replay(cfg: Path, *logs: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "mailban", "replay", "--json", "--config", str(cfg),
                          *map(str, logs)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("version", trixie.VERSIONS)
def test_account_guessing_from_real_lines(tmp_path: Path, version: str) -> None:
    _skip_unless_ready(version)

    mta = trixie.new_mta(version, main_extra={"smtpd_client_event_limit_exceptions": "127.0.0.0/8"})
    try:
        mta.start()
        port, imap = mta.smtp_port, mta.imap_port
        with trixie.clients_of(mta):
            for i, src in enumerate(ATTACKERS):
                if src == "127.0.0.45":  # the owner mistypes once in the middle of the attack
                    assert b"535" in c.smtp_auth(H, port, OWNER, "PLAIN", ALICE, "S3cret-alcie")
                    assert c.imap_login(H, imap, OWNER, ALICE, ALICE_PW)
                    with smtplib.SMTP(H, port, source_address=(OWNER, 0), timeout=10) as s:
                        s.login(ALICE, ALICE_PW)
                        s.sendmail(ALICE, ["friend@remote.example.net"], b"Subject: hi\r\n\r\nhi\r\n")
                assert b"535" in c.smtp_auth(H, port, src, "PLAIN", ALICE, f"guess{i}a")
                if i % 2:
                    assert not c.imap_login(H, imap, src, ALICE, f"guess{i}b")
                else:
                    assert b"535" in c.smtp_auth(H, port, src, "LOGIN", ALICE, f"guess{i}b")
    finally:
        mta.cleanup(keep_logs_in=tmp_path)  # the logs are complete once the daemons stopped
    logs = [tmp_path / "postfix.log", tmp_path / "dovecot.log"]

    # the login name is taken from both programs' lines
    events = []
    for log in logs:
        out = subprocess.run([sys.executable, "-m", "mailban", "test", str(log), "--json",
                              "--config", str(tmp_path / "none.toml")],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        events += [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    fails = [e for e in events if e["kind"] == "auth-failure" and e["filter"] != "dovecot-passdb"]
    by_rule = {(e["filter"], e["rule"]) for e in fails}
    assert ("postfix", "sasl-auth-failed") in by_rule and ("dovecot", "auth-failed") in by_rule, by_rule
    assert all(e["user"] == ALICE for e in fails), [e for e in fails if e["user"] != ALICE]
    assert {e["ip"] for e in fails} == set(ATTACKERS) | {OWNER}
    assert len([e for e in fails if e["ip"] in ATTACKERS]) == 2 * len(ATTACKERS)

    cfg = tmp_path / "guess.toml"
    cfg.write_text(f"""\
[mailban]
logs = []
state_dir = "{tmp_path / 'state'}"
socket = "{tmp_path / 'sock'}"

[jail.account-guess]
kinds = ["auth-failure"]
exclude = ["dovecot-passdb"]
key = "user"
findtime = "10m"
maxretry = 10
min_ips = 5
ban_ips = true
ip_actions = ["notify"]
bantime = "1h"
actions = ["notify"]
""")
    # as captured: the account decision, and no address decision (loopback is never banned)
    decisions = _replay(cfg, *logs)
    assert [(d["key_type"], d["key"]) for d in decisions] == [("user", ALICE)], decisions
    assert decisions[0]["count"] >= 10 and len(decisions[0]["ips"]) >= 5

    # the same lines from routable addresses: every attacker is banned, the owner is not
    mapped = []
    for log in logs:
        text = log.read_text()
        for n in list(range(40, 48)) + [50]:
            text = text.replace(f"127.0.0.{n}]", f"198.51.100.{n}]").replace(f"127.0.0.{n},", f"198.51.100.{n},")
            text = text.replace(f"rip=127.0.0.{n},", f"rip=198.51.100.{n},")
        dest = tmp_path / f"mapped-{log.name}"
        dest.write_text(text)
        mapped.append(dest)
    decisions = _replay(cfg, *mapped)
    users = [d for d in decisions if d["key_type"] == "user"]
    ips = {d["key"] for d in decisions if d["key_type"] == "ip"}
    assert [d["key"] for d in users] == [ALICE], decisions
    assert ips == {f"198.51.100.{n}" for n in range(40, 48)}, decisions
    assert "198.51.100.50" not in ips
    print(f"\n[account-guess] replay of the real lines: user {ALICE} ({users[0]['count']} failures from "
          f"{len(users[0]['ips'])} addresses), {len(ips)} attacking addresses banned, owner spared")
