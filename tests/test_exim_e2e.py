"""End to end with a real Exim (Debian 12's 4.96, Debian 13's 4.98) and the real daemon: the
actions of docs/exim.md, through the ACL lines documented there.

Exim runs from the cached debootstrapped roots of tests/mta/exim.py (built on first use),
chrooted in an overlay, in the server namespace of a netns.Link; the clients connect from the
client namespace (198.51.100.2 guesses passwords, .3 is the stolen account's spammer). The daemon
runs in the server namespace (`mailban run`, netns.Daemon), follows Exim's mainlog and reaches
Exim through `chroot ROOT exim4` argv lists; the list files live in the root's
/var/lib/mailban/exim, where the configuration below (ACL lines copied from docs/exim.md) reads
them. Mail to remote domains goes to a smarthost on a closed port: it stays in the queue.

The shipped exim-queue filter (part 3 of issue 16) turns `<= ... A=authenticator:user` arrival
lines into `submission` events keyed by user, joined to their deliveries by message id; the
jails count a handful of messages instead of 200.
- password guessing: 3 failed AUTHs from .2 ban it in nft; .3 still connects;
- stolen account: 5 messages -> the queued ones are frozen (`exim -Mf`, found through the
  correlation and the spool's `-auth_id`), alice goes into held-users; 3 more in a new session
  are frozen on arrival by the ACL (`frozen by ACL`); the 8th crosses the second jail, which
  disables her: the next MAIL of a session that authenticated before the ban is refused (the
  dsearch directory of docs/exim.md; with a list file it would pass), a new AUTH too;
  `mailban unban --user` thaws all 8 and she sends again, unfrozen;
- a uid (65534, submitting with /usr/sbin/sendmail in the root) banned by hand: its queued mail is
  frozen, what it submits next is frozen by acl_not_smtp, `mailban unban --uid` thaws it all;
- defer: a client address in deferred-hosts gets 451 at connect, IPv6 included.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests import netns
from tests.mta import exim as mta
from tests.mta import in_netns

pytestmark = [pytest.mark.mta, pytest.mark.root]

ALICE, ALICE_PW = "alice@example.test", "S3cret-alice"
LISTS = "/var/lib/mailban/exim"
HOLD_AT, DISABLE_AT = 5, 8

# The ACL lines are docs/exim.md's, word for word (test_docs-style check below).
CONFIG = r"""
primary_hostname = mx.example.test
domainlist local_domains = mx.example.test : example.test
local_interfaces = <; 127.0.0.1 ; 198.51.100.1 ; fd42:6d62::1
spool_directory = /var/spool/exim4
log_file_path = /var/log/exim4/%slog
exim_user = Debian-exim
exim_group = Debian-exim
never_users = root
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
pipelining_connect_advertise_hosts =
tls_advertise_hosts =
auth_advertise_hosts = *
acl_smtp_connect = acl_connect
acl_smtp_mail = acl_mail
acl_smtp_rcpt = acl_rcpt
acl_not_smtp = acl_mailban_not_smtp

begin acl
acl_connect:
  defer   hosts = net-iplsearch;/var/lib/mailban/exim/deferred-hosts
          message = Service temporarily limited, please try again later
  accept

acl_mail:
  defer   senders = lsearch;/var/lib/mailban/exim/deferred-senders
          message = Service temporarily limited, please try again later
  deny    authenticated = *
          condition = ${if match{$authenticated_id}{/}{no}{${lookup{$authenticated_id}dsearch,filter=file,cache=no_rd{/var/lib/mailban/exim/disabled-users.d}{yes}{no}}}}
          message = account disabled by mailban, contact support
  warn    authenticated = *
          condition = ${lookup{$authenticated_id}lsearch{/var/lib/mailban/exim/held-users}{yes}{no}}
          control = freeze/no_tell
          set acl_m_mailban = held
  warn    senders = lsearch;/var/lib/mailban/exim/held-senders
          control = freeze/no_tell
          set acl_m_mailban = held
  accept

acl_rcpt:
  accept  authenticated = *
  deny    message = relay not permitted
          !domains = +local_domains
  accept

acl_mailban_not_smtp:
  warn    condition = ${lookup{$originator_uid}lsearch{/var/lib/mailban/exim/held-uids}{yes}{no}}
          control = freeze/no_tell
          set acl_m_mailban = held
  warn    senders = lsearch;/var/lib/mailban/exim/held-senders
          control = freeze/no_tell
          set acl_m_mailban = held
  accept

begin routers
smarthost:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = * 127.0.0.1::2599
  self = send
  no_more
local_user:
  driver = accept
  domains = +local_domains
  transport = devnull

begin transports
remote_smtp:
  driver = smtp
devnull:
  driver = appendfile
  file = /dev/null
  user = Debian-exim

begin retry
*  *  F,1h,15m

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and {{!eq{${lookup{$auth2}lsearch{/var/lib/mailban/exim/disabled-users}{yes}{no}}}{yes}} {eq{$auth2}{alice@example.test}} {eq{$auth3}{S3cret-alice}}}}
  server_set_id = $auth2
"""



class Env:
    def __init__(self, suite: str, tmp: Path) -> None:
        self.tmp = tmp
        self.link = netns.Link().up()
        self.exim = mta.Exim(suite, "default", config=CONFIG, netns=self.link.srv)
        self.daemon: netns.Daemon | None = None

    @property
    def root(self) -> Path:
        return self.exim.root

    def lists(self, name: str) -> list[str]:
        p = self.root / LISTS.lstrip("/") / name
        return [ln.strip('"') for ln in p.read_text().splitlines() if ln and not ln.startswith("#")] if p.exists() else []

    def start(self) -> None:
        self.exim.start()
        exim4 = ["chroot", str(self.root), "exim4"]
        lists = str(self.root / LISTS.lstrip("/"))
        t = self.tmp
        (t / "filters.d").mkdir()
        actions = {
            "queue-hold": f'mta = "exim"\nexim = {exim4!r}\nlists_dir = "{lists}"\n'
                          f'spool_directory = "{self.root}/var/spool/exim4"\n',
            "sasl-disable": f'dovecot_deny_file = ""\npostfix_map = ""\nkick = []\ndoveconf = []\n'
                            f'exim_list = "{lists}/disabled-users"\nexim = {exim4!r}\n',
            "defer": f'mta = "exim"\nexim = {exim4!r}\nlists_dir = "{lists}"\n',
        }
        config = netns.write_config(t, [str(self.exim.mainlog)], maxretry=3, extra=f"""
[jail.outbound-user]
kinds = ["submission"]
key = "user"
findtime = "1h"
maxretry = {HOLD_AT}
bantime = "1d"
actions = ["queue-hold"]

[jail.outbound-user-disable]
kinds = ["submission"]
key = "user"
findtime = "1h"
maxretry = {DISABLE_AT}
bantime = "1d"
actions = ["sasl-disable"]

[jail.outbound-uid]
kinds = ["submission"]
key = "uid"
findtime = "1h"
maxretry = 1000
bantime = "1d"
actions = ["queue-hold"]

[jail.slow]
kinds = ["rate-limit"]
key = "ip"
maxretry = 1000
actions = ["defer"]
""".replace("'", '"'))
        for name, text in actions.items():
            (t / "actions.d" / f"{name}.toml").write_text(f'[action]\ntype = "{name}"\n{text}'.replace("'", '"'))
        check = self.cli_raw("check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "warning" not in check.stdout, check.stdout  # Exim's configuration reads every list
        self.daemon = netns.Daemon(self.link, config).start()
        self.wait(lambda: (self.root / LISTS.lstrip("/") / "disabled-users").exists(), "the list files")

    def wait(self, pred: Any, what: str, timeout: float = 10) -> float:
        try:
            return netns.wait_for(pred, timeout, what=what)
        except AssertionError as exc:
            log = self.daemon.log()[-3000:] if self.daemon else ""
            raise AssertionError(f"{exc}\nqueue: {self.queue()}\ndaemon:\n{log}\nmainlog:\n"
                                 f"{self.exim.mainlog.read_text()[-2000:]}") from None

    def cli_raw(self, *args: str) -> subprocess.CompletedProcess[str]:
        import sys
        return netns.run([sys.executable, "-m", "mailban", *args, "--config", str(self.tmp / "mailban.toml")],
                         check=False, timeout=60)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.exim.stop()
        dest = os.environ.get("MAILBAN_MTA_KEEP_LOGS")
        if dest and self.exim.mainlog.exists():
            Path(dest).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.exim.mainlog, Path(dest) / f"exim-e2e-{self.exim.suite}.mainlog")
        self.exim.cleanup()
        self.link.close()

    # ---- clients (in the client namespace) -------------------------------------------------
    def smtp(self, src: str) -> smtplib.SMTP:
        dst = netns.SERVER6 if ":" in src else netns.SERVER4
        with in_netns(self.link.cli):
            return smtplib.SMTP(dst, mta.PORT, source_address=(src, 0), timeout=5)

    def send(self, src: str, count: int, start: int) -> None:
        with self.smtp(src) as s:
            s.login(ALICE, ALICE_PW)
            for i in range(start, start + count):
                s.sendmail(ALICE, [f"r{i}@remote.example.net"], f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode())

    def auth_ok(self, src: str = netns.OTHER4) -> bool:
        try:
            with self.smtp(src) as s:
                s.login(ALICE, ALICE_PW)
                return True
        except smtplib.SMTPAuthenticationError:
            return False

    def queue(self) -> dict[str, dict[str, Any]]:
        from mailban.actions.exim import scan_spool
        return scan_spool(str(self.root / "var/spool/exim4"))

    def of(self, **want: Any) -> dict[str, dict[str, Any]]:
        return {q: i for q, i in self.queue().items() if all(i.get(k) == v for k, v in want.items())}

    def local_submit(self, n: int) -> None:
        subprocess.run(["chroot", "--userspec=65534:65534", str(self.root), "/usr/sbin/sendmail", "-odq",
                        f"web{n}@remote.example.net"], input=f"Subject: php {n}\n\nspam {n}\n".encode(),
                       check=True, timeout=30, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


@pytest.fixture(scope="module", params=list(mta.SUITES))
def env(request, tmp_path_factory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, overlays, chroot")
    for tool in ("ip", "nft", "rsyslogd", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")
    e = Env(request.param, tmp_path_factory.mktemp(f"exim-e2e-{request.param}"))
    try:
        e.start()
        yield e
    finally:
        e.stop()


def test_password_guessing_is_banned_in_nft(env: Env) -> None:
    t0 = time.monotonic()
    with env.smtp(netns.CLIENT4) as s:
        s.ehlo("guesser.example")
        for i in range(3):
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login(ALICE, f"guess{i}")
    took = env.wait(lambda: netns.CLIENT4 in env.link.nft_elements(), what="the nft ban")
    print(f"\n[exim {env.exim.suite}] 3 failed AUTHs -> nft ban in {time.monotonic() - t0:.2f}s ({took:.2f}s waited)")
    with pytest.raises(OSError):
        env.smtp(netns.CLIENT4)
    env.smtp(netns.OTHER4).quit()  # another client still connects


def test_stolen_account_is_frozen_disabled_and_given_back(env: Env) -> None:
    suite = env.exim.suite
    t0 = time.monotonic()
    env.send(netns.OTHER4, HOLD_AT, 0)
    mine = lambda: env.of(user=ALICE)  # noqa: E731
    env.wait(lambda: len(mine()) == HOLD_AT and all(i["frozen"] for i in mine().values())
             and ALICE in env.lists("held-users"), what="alice's messages frozen")
    print(f"\n[exim {suite}] {HOLD_AT} messages -> all frozen (exim -Mf), held-users written: "
          f"{time.monotonic() - t0:.2f}s")
    assert env.auth_ok()  # held, not disabled yet
    # A session that authenticates now, before the disable, and waits: its authenticator looked
    # alice up in disabled-users, and Exim keeps that file open and the answer cached until the
    # session's next DATA (receive.c's search_tidyup), so with a list file its next MAIL would
    # pass. The dsearch directory is read at each lookup (docs/exim.md).
    session = env.smtp(netns.OTHER4)
    session.login(ALICE, ALICE_PW)
    # new mail is frozen on arrival by the ACL, with mailban's mark
    env.send(netns.OTHER4, DISABLE_AT - HOLD_AT, HOLD_AT)
    arrived = [i for i in mine().values() if i["ours"]]
    assert len(arrived) == DISABLE_AT - HOLD_AT and all(i["frozen"] for i in arrived), env.queue()
    assert "frozen by ACL" in env.exim.mainlog.read_text()
    # the 8th message crosses the second jail: the account is disabled
    t1 = time.monotonic()
    env.wait(lambda: ALICE in env.lists("disabled-users")
             and (env.root / LISTS.lstrip("/") / "disabled-users.d" / ALICE).exists(), what="disabled-users")
    # the session that authenticated before the ban is refused at its next MAIL, and so is a
    # new AUTH
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        session.sendmail(ALICE, ["r99@remote.example.net"], b"Subject: after\r\n\r\nafter\r\n")
    assert refused.value.smtp_code == 550 and b"disabled by mailban" in refused.value.smtp_error
    session.quit()
    print(f"[exim {suite}] message {DISABLE_AT} -> next MAIL of the open session refused: "
          f"{time.monotonic() - t1:.2f}s")
    assert not env.auth_ok()
    print(f"[exim {suite}] message {DISABLE_AT} -> AUTH refused: {time.monotonic() - t1:.2f}s")
    assert len(mine()) == DISABLE_AT and all(i["frozen"] for i in mine().values())
    explain = env.cli_raw("explain", "--user", ALICE)
    assert explain.returncode == 0, explain.stderr

    t2 = time.monotonic()
    out = env.cli_raw("unban", "--user", ALICE)
    assert out.returncode == 0, out.stderr
    env.wait(lambda: not any(i["frozen"] for i in mine().values()) and env.auth_ok(), what="alice thawed and enabled")
    print(f"[exim {suite}] unban --user -> {DISABLE_AT} messages thawed (exim -Mt), AUTH accepted: "
          f"{time.monotonic() - t2:.2f}s")
    assert env.lists("held-users") == [] and env.lists("disabled-users") == []
    assert list((env.root / LISTS.lstrip("/") / "disabled-users.d").iterdir()) == []
    assert len(mine()) == DISABLE_AT
    env.send(netns.OTHER4, 1, 100)  # and her new mail is not frozen
    assert len(mine()) == DISABLE_AT + 1 and not any(i["frozen"] for i in mine().values())


def test_uid_submitting_through_sendmail_is_frozen_and_thawed(env: Env) -> None:
    env.local_submit(0)
    env.local_submit(1)
    assert len(env.of(uid=65534)) == 2
    out = env.cli_raw("ban", "--uid", "65534", "--jail", "outbound-uid")
    assert out.returncode == 0, out.stdout + out.stderr
    env.wait(lambda: all(i["frozen"] for i in env.of(uid=65534).values())
                   and "65534" in env.lists("held-uids"), what="the uid's mail frozen")
    env.local_submit(2)  # the web script goes on: acl_not_smtp freezes it on arrival
    assert len(env.of(uid=65534)) == 3 and all(i["frozen"] for i in env.of(uid=65534).values())
    assert sum(i["ours"] for i in env.of(uid=65534).values()) == 1
    out = env.cli_raw("unban", "--uid", "65534")
    assert out.returncode == 0, out.stderr
    env.wait(lambda: not any(i["frozen"] for i in env.of(uid=65534).values()), what="thawed")
    assert env.lists("held-uids") == []


def test_defer_a_client_address(env: Env) -> None:
    for ip in (netns.OTHER4, netns.CLIENT6):
        out = env.cli_raw("ban", ip, "--jail", "slow", "--for", "1h")
        assert out.returncode == 0, out.stdout + out.stderr
    env.wait(lambda: {netns.OTHER4, netns.CLIENT6} <= set(env.lists("deferred-hosts")), what="deferred-hosts")
    for ip in (netns.OTHER4, netns.CLIENT6):
        with pytest.raises(smtplib.SMTPConnectError) as err:
            env.smtp(ip)
        assert err.value.smtp_code == 451
    out = env.cli_raw("unban", netns.OTHER4, netns.CLIENT6)
    assert out.returncode == 0, out.stderr
    env.smtp(netns.OTHER4).quit()


def test_docs_give_the_tested_acl_lines() -> None:
    """Every line of docs/exim.md that names a list file is a line of the configuration tested here
    (the authenticator's condition aside: the docs leave its EXISTING CONDITION to the admin)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "exim.md").read_text()
    tested = {ln.strip() for ln in CONFIG.splitlines()}
    lines = [ln.strip() for ln in doc.splitlines() if LISTS + "/" in ln and ln.startswith("      ")
             and "EXISTING CONDITION" not in ln]
    assert len(lines) >= 7
    assert [ln for ln in lines if ln not in tested] == []
