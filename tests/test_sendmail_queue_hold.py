"""queue-hold on a real sendmail 8.17: quarantine, release and purge of an account's queued mail.

A private sendmail (tests/mta/sendmail.py: own network namespace, `-C` config, private rsyslogd)
accepts mail from the authenticated client alice addressed to 127.0.0.99, where nothing listens,
so the messages stay queued (deferred). The queue ids of alice's messages come from the real
correlation (`mailban test --json` over the log sendmail wrote: the AUTH line joined to `from=`
by process id); the action is then called directly with a Ban, running sendmail's own queue
commands in the namespace. Checked with sendmail's own listings (`-bp`, `-bp -qQ`):
- ban: all of alice's messages are quarantined with mailban's reason, a bystander's message is not;
- hold_more (mail alice submits during the ban), also of a message that is locked (being
  delivered) at first, which tick() quarantines once it is free; and a sender ban;
- unban: they are back in the normal queue, no longer quarantined, and a quarantine mailban did
  not write (the admin's) is left alone;
- purge (qtool.pl -Q -d): the quarantined messages are gone.
Also, without an MTA: parse_mailq on sendmail's listing format.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailban.actions.base import ActionContext
from mailban.actions.queue_hold import QueueHoldAction, parse_mailq
from mailban.core.records import Ban

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "victim@[127.0.0.99]"
ALICE_SRC = "127.0.0.52"
OTHER_SRC = "127.0.0.53"

LISTING = """\
\t\t/var/spool/mqueue (3 requests)
-----Q-ID----- --Size-- -Priority- ---Q-Time--- --------Sender/Recipient--------
6APBv7iI031067*      25      30271 Nov 25 11:57 <alice1@sender.example>
     QUARANTINE: mailban queue-hold (user ban)
                 (Deferred: Connection refused by [127.0.0.99])
\t\t\t\t\t\t<victim@[127.0.0.99]>
6APBv8FG031076     1572      31516+Nov  5 11:57 MAILER-DAEMON
                 (Deferred: Name server: sender.example.: host name lookup failure)
\t\t\t\t\t\t<6APBv7ZD031071      25      30271 Nov 25 11:57 <forged@x>
6APBvRad031142       25      30263 Nov 25 11:57 <x y@z.example>
\t\tTotal requests: 3
"""


def test_parse_mailq_reads_sendmails_listing() -> None:
    q = parse_mailq(LISTING, quarantined=True)
    assert sorted(q) == ["6APBv7iI031067", "6APBv8FG031076", "6APBvRad031142"]  # no id from a recipient line
    assert q["6APBv7iI031067"]["locked"] and q["6APBv7iI031067"]["reason"] == "mailban queue-hold (user ban)"
    assert q["6APBv7iI031067"]["dir"] == "/var/spool/mqueue" and q["6APBv7iI031067"]["queue_name"] == "hold"
    assert q["6APBv8FG031076"]["sender"] == "" and q["6APBv8FG031076"]["reason"] is None
    assert q["6APBvRad031142"]["sender"] == "x y@z.example"
    assert parse_mailq("\t\t/var/spool/mqueue is empty\n\t\tTotal requests: 0\n", False) == {}


def test_validate_refuses_unknown_mta() -> None:
    with pytest.raises(ValueError, match="mta"):
        QueueHoldAction.validate({"mta": "qmail"})
    QueueHoldAction.validate({"mta": "sendmail", "sendmail": ["/usr/sbin/sendmail", "-C", "/x.cf"]})


# ------------------------------------------------------------------------------------------------
# real sendmail
# ------------------------------------------------------------------------------------------------
def ban(key_type: str, key: str) -> Ban:
    now = time.time()
    return Ban(jail="outbound-user", key_type=key_type, key=key, time=now, until=now + 3600, count=200,
               findtime=3600.0, actions=("queue-hold",))


def correlated(log: Path, workdir: Path) -> list[dict]:
    (workdir / "none.toml").write_text("")
    out = subprocess.run([sys.executable, "-m", "mailban", "test", str(log), "--json",
                          "--config", str(workdir / "none.toml")],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def alice_sends(mta, n: int, sender: str = "alice@sender.example") -> None:
    call = ["swaks", ALICE_SRC, "--helo", "client.example.test", "--auth", "PLAIN", "--auth-user", "alice",
            "--auth-password", "S3cret-alice", "--from", sender, "--to", UNREACHABLE]
    results = mta.clients([call] * n)
    assert all(r["returncode"] == 0 for r in results), results


def deferred_count(mta) -> int:
    return mta.log.read_text(errors="replace").count("stat=Deferred: Connection refused by [127.0.0.99]")


@pytest.mark.mta
@pytest.mark.root
def test_sendmail_queue_hold_quarantines_and_releases(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: starts sendmail in a network namespace")
    for tool in ("ip", "m4", "rsyslogd", "saslpasswd2", "swaks", "perl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")
    from tests.mta import sendmail as sm
    reason = sm.available()
    if reason:
        pytest.skip(reason)
    qtool = sm.SMROOT / "usr/share/sendmail/qtool.pl"
    figures: dict[str, float] = {}
    t_all = time.monotonic()
    with sm.Sendmail() as mta:
        cf = str(mta.work / "sendmail.cf")
        sendmail = ["ip", "netns", "exec", mta.netns, str(sm.SMDIR / "sendmail"), "-C", cf]

        def listing(quarantined: bool) -> dict[str, dict]:
            argv = [*sendmail, "-bp", "-v", *(["-qQ"] if quarantined else [])]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
            return parse_mailq(out, quarantined)

        # traffic: 4 messages of alice's, 1 of a bystander's (its bounce stays queued: DNS fails)
        t = time.monotonic()
        alice_sends(mta, 4)
        mta.clients([["swaks", OTHER_SRC, "--helo", "c.example.test", "--from", "bystander@sender.example",
                      "--to", "root@mx.example.test"]])
        mta._wait(lambda: deferred_count(mta) >= 4, "alice's messages were not deferred")
        # the bystander's message bounces (mail.local is not set up); its DSN then stays deferred
        mta.wait_for_log("host name lookup failure")
        figures["submit 5 messages"] = time.monotonic() - t
        queued = listing(False)
        assert len(queued) == 5, queued

        # the real correlation: sendmail's AUTH line joined to its from= line by process id
        t = time.monotonic()
        shutil.copy(mta.log, tmp_path / "sendmail.log")
        events = correlated(tmp_path / "sendmail.log", tmp_path)
        alice_qids = sorted({e["queue_id"] for e in events if e["kind"] == "queued" and e["user"] == "alice"})
        figures["mailban test --json"] = time.monotonic() - t
        assert len(alice_qids) == 4 and set(alice_qids) <= set(queued), (alice_qids, events)
        bystander = [q for q in queued if q not in alice_qids]
        assert len(bystander) == 1

        correlation: dict[tuple[str, str], list[str]] = {("user", "alice"): alice_qids}
        context = ActionContext(state_dir=str(tmp_path / "state"),
                                queue_ids=lambda key_type, key: list(correlation.get((key_type, key), [])))
        action = QueueHoldAction("queue-hold", {"mta": "sendmail", "sendmail": sendmail,
                                                "qtool": ["perl", str(qtool), "-C", cf], "timeout": 20}, context)
        action.start([])

        # ban: alice's messages are quarantined, the bystander's is not
        t = time.monotonic()
        action.ban([ban("user", "alice")])
        figures["ban (quarantine 4)"] = time.monotonic() - t
        held = listing(True)
        assert sorted(held) == alice_qids, held
        assert all(h["reason"] == "mailban queue-hold (user ban)" for h in held.values())
        assert sorted(listing(False)) == bystander
        assert sorted(action.held_for("user", "alice")) == alice_qids
        action.ban([ban("user", "alice")])  # idempotent
        assert sorted(listing(True)) == alice_qids

        # mail alice submits during the ban: the daemon passes its queue ids to hold_more
        alice_sends(mta, 1)
        mta._wait(lambda: deferred_count(mta) >= 5, "alice's 5th message was not deferred")
        shutil.copy(mta.log, tmp_path / "sendmail.log")
        new = sorted({e["queue_id"] for e in correlated(tmp_path / "sendmail.log", tmp_path)
                      if e["kind"] == "queued" and e["user"] == "alice"} - set(alice_qids))
        assert len(new) == 1
        # as if sendmail were delivering it: its qf file is locked (flock, as sendmail on Linux)
        with open(mta.work / "mqueue" / f"qf{new[0]}", "rb") as qf:
            fcntl.flock(qf, fcntl.LOCK_EX)
            assert listing(False)[new[0]]["locked"]
            t = time.monotonic()
            action.hold_more("user", "alice", new)
            figures["hold_more (1, locked)"] = time.monotonic() - t
            assert new[0] not in listing(True) and new[0] in action.pending[action._key("user", "alice")]
        t = time.monotonic()
        deadline = time.monotonic() + 15
        while new[0] not in listing(True) and time.monotonic() < deadline:  # unlocked: tick retries
            action.next_retry = 0.0
            action.tick(time.time())
        figures["tick retry (1)"] = time.monotonic() - t
        assert not action.pending
        assert sorted(listing(True)) == sorted(alice_qids + new)
        alice_qids = sorted(alice_qids + new)
        correlation[("user", "alice")] = alice_qids  # the daemon's correlation has seen it too

        # an admin's own quarantine of the bystander's message is not mailban's to release
        subprocess.run([*sendmail, "-Qheld by the admin", f"-qI{bystander[0]}"], check=True, timeout=30)

        # unban: released, back in the normal queue
        t = time.monotonic()
        action.unban([ban("user", "alice")])
        figures["unban (release 5)"] = time.monotonic() - t
        assert sorted(listing(True)) == bystander
        assert sorted(listing(False)) == alice_qids
        assert action.held_for("user", "alice") == []

        # sender ban: found by the envelope sender in sendmail's listing (no correlation)
        alice_sends(mta, 1, sender="odd sender@sender.example")
        mta._wait(lambda: deferred_count(mta) >= 6, "the 6th message was not deferred")
        odd = [q for q, item in listing(False).items() if item["sender"] == "odd sender@sender.example"]
        assert len(odd) == 1
        t = time.monotonic()
        action.ban([ban("sender", "odd sender@sender.example")])
        figures["sender ban (1)"] = time.monotonic() - t
        assert sorted(listing(True)) == sorted(bystander + odd)

        # purge: qtool.pl deletes what mailban quarantined, and nothing else
        action.ban([ban("user", "alice")])
        assert sorted(listing(True)) == sorted(alice_qids + bystander + odd)
        t = time.monotonic()
        deleted = action.purge("user", "alice")
        figures["purge (5)"] = time.monotonic() - t
        assert deleted == len(alice_qids)
        assert sorted(listing(True)) == sorted(bystander + odd)
        assert not set(alice_qids) & set(listing(False))
        action.unban([ban("sender", "odd sender@sender.example")])
        assert sorted(listing(True)) == bystander
    figures["whole test"] = time.monotonic() - t_all
    print("\nsendmail queue-hold figures (s): " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
