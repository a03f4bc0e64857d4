"""End to end with a real postfix (Debian 12's, tests/mta/postfix_dovecot.py) on loopback and
mailban's policy service in smtpd_recipient_restrictions:
- an account over an inline limit of 20 messages is deferred on its 21st;
- a disabled account is refused on its very next RCPT, timed from the decision (target < 50 ms);
- a held account's next message lands in the hold queue;
- with mailban stopped, mail flows (postfix's default_action = DUNNO);
- inline counts survive a kill -9 of the service's process and of mailban: 15 messages, both
  restarts, 6 more -> the 21st is deferred;
- `status`, `ban --jail`, `unban` and `explain` know the inline jail.
The sasl-disable action here has no postfix map: a refusal can only come from the policy service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.mta.postfix_dovecot import PostfixDovecot

REPO = Path(__file__).resolve().parent.parent
H = "127.0.0.1"
USERS = {"carol@example.test": "S3cret-carol", "dave@example.test": "S3cret-dave", "erin@example.test": "S3cret-erin",
         "frank@example.test": "S3cret-frank", "grace@example.test": "S3cret-grace"}
LIMIT = 20


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class Env:
    def __init__(self, mta: PostfixDovecot, tmp: Path) -> None:
        self.mta, self.tmp = mta, tmp
        self.config = tmp / "mailban.toml"
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        m, t, etc = self.mta, self.tmp, str(self.mta.etc)
        (t / "actions.d").mkdir()
        (t / "actions.d" / "sasl-disable.toml").write_text(f"""[action]
type = "sasl-disable"
dovecot_deny_file = "{m.deny_file}"
postfix_map = ""
kick = []
doveconf = []
""")
        (t / "actions.d" / "queue-hold.toml").write_text(f"""[action]
type = "queue-hold"
postqueue = ["postqueue", "-c", "{etc}"]
postsuper = ["postsuper", "-c", "{etc}"]
postcat = ["postcat", "-c", "{etc}"]
""")
        self.config.write_text(f"""[mailban]
logs = ["{m.maillog}"]
state_dir = "{t / 'state'}"
socket = "{t / 'mailban.sock'}"
metrics = ""
protect_own = false
policy_listen = "unix:{m.queue}/private/mailban-policy"
policy_socket_owner = "postfix"
shipped_jails = false

[jail.inline-out]
inline = true
key = "user"
maxretry = {LIMIT}
findtime = "1h"
bantime = "1h"
actions = []
# the other tests send many RCPTs of their own
ignorekeys = ["dave@example.test", "erin@example.test"]

[jail.disable-user]
kinds = ["submission"]
key = "user"
maxretry = 100000
actions = ["sasl-disable"]

[jail.hold-user]
kinds = ["submission"]
key = "user"
maxretry = 100000
actions = ["queue-hold"]
""")
        check = self.mailban("check")
        assert check.returncode == 0, check.stdout + check.stderr

    def mailban(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailban", *args, "--config", str(self.config)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    def start_daemon(self) -> None:
        self.log = open(self.tmp / "daemon.log", "ab")  # appended: restarts keep what was said
        # In a network namespace of its own (unshare execs, so the pid is the daemon's): the
        # daemon always starts its nft action (manual bans go through it), whose table must not
        # land in the host's ruleset; everything it talks to here is a unix socket or a file.
        self.proc = subprocess.Popen(["unshare", "--net", "--", sys.executable, "-m", "mailban", "run",
                                      "--config", str(self.config)],
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("the daemon", lambda: self.proc.poll() is not None or self.mailban("status", "--json").returncode == 0,
                 timeout=20)
        assert self.proc.poll() is None, (self.tmp / "daemon.log").read_text()
        wait_for("the policy socket", (self.mta.queue / "private" / "mailban-policy").exists)

    def stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
            self.log.close()

    def session(self, user: str) -> smtplib.SMTP:
        s = smtplib.SMTP(H, self.mta.smtp_port, timeout=10)
        s.ehlo("client.example.test")
        s.login(user, USERS[user])
        return s

    def bans(self) -> list[dict]:
        return json.loads(self.mailban("list", "--json").stdout)

    def queue(self) -> list[dict]:
        out = subprocess.run(["postqueue", "-c", str(self.mta.etc), "-j"], capture_output=True, text=True, timeout=30)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0 or shutil.which("postfix") is None or shutil.which("dovecot") is None:
        pytest.skip("needs root, postfix and dovecot (tests/mta/install.sh)")
    tmp = tmp_path_factory.mktemp("policy-e2e")
    policy = ("check_policy_service { unix:private/mailban-policy, default_action=DUNNO, timeout=2s, "
              "try_limit=1 }, permit")
    mta = PostfixDovecot(main_extra={"smtpd_recipient_restrictions": policy,
                                     "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
                                     "smtpd_junk_command_limit": "100000"},  # the RSET loop
                         extra_users=USERS)
    e = Env(mta, tmp)
    try:
        mta.start()
        e.write_config()
        e.start_daemon()
        yield e
    finally:
        e.stop_daemon()
        mta.cleanup(keep_logs_in=tmp)


def test_inline_limit_defers_the_21st_message(env: Env) -> None:
    user = "carol@example.test"
    s = env.session(user)
    for n in range(LIMIT):
        s.sendmail(user, [f"r{n}@remote.example.net"], f"Subject: {n}\r\n\r\nhello\r\n")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        s.sendmail(user, ["r21@remote.example.net"], "Subject: 21\r\n\r\nhello\r\n")
    code, text = refused.value.recipients["r21@remote.example.net"]
    assert code == 450 and b"rate limit" in text and b"mailban" not in text.lower()
    s.quit()
    ban = wait_for("the inline ban", lambda: next((b for b in env.bans() if b["key"] == user), None))
    assert ban["jail"] == "inline-out" and ban["count"] == LIMIT
    assert "sasl_username=carol@example.test" in env.mailban("explain", "--user", user).stdout
    # lifted like any other: the next message passes
    assert env.mailban("unban", "--user", user).returncode == 0
    s = env.session(user)
    wait_for("the unban to reach the service", lambda: not s.sendmail(user, ["r22@remote.example.net"], "x"), 5)
    s.quit()


def test_disabled_account_is_refused_on_its_next_rcpt(env: Env) -> None:
    user = "dave@example.test"
    s = env.session(user)
    s.sendmail(user, ["first@remote.example.net"], "Subject: ok\r\n\r\nhi\r\n")
    proc = subprocess.Popen([sys.executable, "-m", "mailban", "ban", "--user", user, "--jail", "disable-user",
                             "--config", str(env.config)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # RCPTs in one transaction, each a policy request: postfix opens a queue file only at a
    # transaction's first accepted RCPT. A RSET/MAIL/RCPT loop opened one per RCPT, and after
    # about 100 of them (none delivered) postfix's inbound flow control (in_flow_delay = 1s:
    # cleanup waits for a token that only deliveries give back) held one RCPT for 1 s, which
    # is what the first measurements of this test timed (0.6-0.9 s), not mailban.
    s.mail(user)
    refused_at = None
    stamps: list[float] = []
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if len(stamps) % 500 == 499:  # smtpd_recipient_limit is 1000
            s.rset()
            s.mail(user)
        code, text = s.rcpt(f"next{len(stamps)}@remote.example.net")
        stamps.append(time.time())
        if code >= 500:
            refused_at = stamps[-1]
            assert code == 554 and b"Account disabled" in text
            break
    assert proc.wait(30) == 0, proc.stderr.read()
    assert refused_at is not None, "never refused"
    ban = next(b for b in env.bans() if b["key"] == user)
    delay = refused_at - ban["time"]
    before = [t for t in stamps if t <= ban["time"]]
    gaps = sorted(round((b - a) * 1000, 1) for a, b in zip(stamps, stamps[1:]))
    print(f"\nlast accepted RCPT answered {(before[-1] - ban['time']) * 1000 if before else float('nan'):.1f} ms "
          f"before the decision; {len(stamps)} RCPTs, longest gaps ms: {gaps[-5:]}")
    print(f"\ndisabled account refused {delay * 1000:.1f} ms after the decision")
    (env.tmp / "disable-delay.txt").write_text(f"{delay * 1000:.1f} ms\n")
    # The target. Measured 1.0-6.7 ms (twelve runs, docs/policy.md): the service is handed
    # the decision before the sasl-disable action runs, and answers from memory.
    assert delay < 0.05, f"refused {delay * 1000:.1f} ms after the decision; RCPT gaps {gaps[-5:]}"
    s.quit()


def test_held_account_next_message_is_held(env: Env) -> None:
    user = "erin@example.test"
    assert env.mailban("ban", "--user", user, "--jail", "hold-user").returncode == 0
    s = env.session(user)
    s.sendmail(user, ["held@remote.example.net"], "Subject: held\r\n\r\nhi\r\n")
    s.quit()
    held = wait_for("the message in the hold queue",
                    lambda: [q for q in env.queue() if q["sender"] == user and q["queue_name"] == "hold"])
    assert len(held) == 1


def test_a_killed_service_process_is_restarted_and_mail_flows_meanwhile(env: Env) -> None:
    import re

    def pids() -> list[int]:
        return [int(p) for p in re.findall(r"policy service: process (\d+) answers", (env.tmp / "daemon.log").read_text())]

    first = pids()[-1]
    os.kill(first, signal.SIGKILL)
    user = "carol@example.test"
    s = env.session(user)
    s.sendmail(user, ["gap@remote.example.net"], "Subject: gap\r\n\r\nhi\r\n")  # DUNNO or the new child
    s.quit()
    wait_for("a new policy process", lambda: pids()[-1] != first, 10)
    # the new one knows the bans in force: erin's next message is held too
    user = "erin@example.test"
    s = env.session(user)
    s.sendmail(user, ["again@remote.example.net"], "Subject: again\r\n\r\nhi\r\n")
    s.quit()
    wait_for("the second message in the hold queue",
             lambda: len([q for q in env.queue() if q["sender"] == user and q["queue_name"] == "hold"]) == 2)
    assert env.proc is not None and env.proc.poll() is None


def policy_pids(env: Env) -> list[int]:
    import re

    return [int(p) for p in re.findall(r"policy service: process (\d+) answers", (env.tmp / "daemon.log").read_text())]


def inline_count(env: Env, user: str) -> int:
    """What the inline jail counts for `user`, as the daemon knows it (and has committed)."""
    ex = json.loads(env.mailban("explain", "--user", user, "--json").stdout)
    return next((c["count"] for c in ex["counting"] if c["jail"] == "inline-out"), 0)


def send(env: Env, user: str, n: int, tag: str) -> None:
    s = env.session(user)
    for i in range(n):
        s.sendmail(user, [f"{tag}{i}@remote.example.net"], f"Subject: {tag}{i}\r\n\r\nhello\r\n")
    s.quit()


def test_inline_counts_survive_a_killed_service_process_and_a_killed_mailban(env: Env) -> None:
    user = "frank@example.test"
    send(env, user, 8, "a")
    sent = time.monotonic()
    wait_for("8 counted in the daemon", lambda: inline_count(env, user) == 8, 5)
    lag = [time.monotonic() - sent]
    first = policy_pids(env)[-1]
    os.kill(first, signal.SIGKILL)  # the service's process: forked again with the daemon's windows
    wait_for("a new policy process", lambda: policy_pids(env)[-1] != first, 10)
    send(env, user, 7, "b")
    sent = time.monotonic()
    wait_for("15 counted in the daemon", lambda: inline_count(env, user) == 15, 5)
    lag.append(time.monotonic() - sent)
    print(f"\ninline counts reached the daemon's database {', '.join(f'{x * 1000:.0f}' for x in lag)} ms "
          f"after the last message (the child sends once a second; includes a `mailban explain` run)")
    assert max(lag) < 2.5
    status = json.loads(env.mailban("status", "inline-out", "--json").stdout)
    assert status["inline"] and [user, 15] in status["top"]
    assert env.proc is not None
    child = policy_pids(env)[-1]
    env.proc.kill()  # kill -9 of mailban: its child leaves when the link closes
    env.proc.wait(10)
    env.log.close()
    wait_for("the policy process to leave", lambda: not os.path.exists(f"/proc/{child}") or
             "zombie" in Path(f"/proc/{child}/status").read_text().lower(), 10)
    env.start_daemon()
    assert inline_count(env, user) == 15  # restored from the database
    s = env.session(user)
    for n in range(LIMIT - 15):
        s.sendmail(user, [f"c{n}@remote.example.net"], f"Subject: c{n}\r\n\r\nhello\r\n")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        s.sendmail(user, ["c21@remote.example.net"], "Subject: 21\r\n\r\nhello\r\n")
    code, text = refused.value.recipients["c21@remote.example.net"]
    assert code == 450 and b"rate limit" in text
    s.quit()
    ban = wait_for("the inline ban", lambda: next((b for b in env.bans() if b["key"] == user), None))
    assert ban["jail"] == "inline-out" and ban["count"] == LIMIT


def test_status_ban_unban_and_explain_know_the_inline_jail(env: Env) -> None:
    user = "grace@example.test"
    send(env, user, 3, "g")
    wait_for("3 counted", lambda: inline_count(env, user) == 3, 5)
    text = env.mailban("status").stdout
    assert "jail inline-out (inline)" in text and "grace@example.test" in text
    banned = env.mailban("ban", "--user", user, "--jail", "inline-out", "--for", "10m")
    assert banned.returncode == 0, banned.stderr
    assert "policy service" in banned.stdout
    s = env.session(user)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:  # the service answers for it at once
        s.sendmail(user, ["g-banned@remote.example.net"], "x")
    assert refused.value.recipients["g-banned@remote.example.net"][0] == 450
    status = json.loads(env.mailban("status", "inline-out", "--json").stdout)
    assert status["banned"] >= 1 and any(b["key"] == user and b["manual"] for b in status["bans"])
    ex = json.loads(env.mailban("explain", "--user", user, "--json").stdout)
    assert [b["jail"] for b in ex["active"]] == ["inline-out"]
    assert not any(c["jail"] == "inline-out" for c in ex["counting"])  # a banned key counts nothing
    unbanned = env.mailban("unban", "--user", user)
    assert unbanned.returncode == 0 and "inline-out" in unbanned.stdout, unbanned.stderr
    wait_for("the unban to reach the service", lambda: not s.sendmail(user, ["g-again@remote.example.net"], "x"), 5)
    s.quit()
    wait_for("counting afresh", lambda: inline_count(env, user) == 1, 5)
    assert "inline, at postfix's policy check" in env.mailban("explain", "--user", user).stdout
    # a clean stop loses nothing: the daemon asks the child for every changed window first
    send(env, user, 2, "g-stop")
    env.stop_daemon()
    env.start_daemon()
    assert inline_count(env, user) == 3
    # a reload keeps the inline jail's counts, in the service and in the database
    assert env.mailban("reload").returncode == 0 and inline_count(env, user) == 3
    env.stop_daemon()
    env.start_daemon()
    assert inline_count(env, user) == 3


def test_mail_flows_with_mailban_stopped(env: Env) -> None:
    env.stop_daemon()
    user = "carol@example.test"
    s = env.session(user)
    started = time.monotonic()
    for n in range(3):
        s.sendmail(user, [f"down{n}@remote.example.net"], "Subject: down\r\n\r\nhi\r\n")
    took = time.monotonic() - started
    s.quit()
    assert took < 3, f"3 messages took {took:.2f}s with mailban stopped"
    assert "mailban-policy" in (env.mta.maillog.read_text())  # postfix noticed, and used its default
