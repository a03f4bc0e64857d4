"""Writes the input.log of each scenario in tests/cases/ (run it after changing a scenario here).

Each scenario is a folder: mailban.toml (the configuration, its header says what the case shows),
input.log (written here, in the line formats of the real captures in tests/filters/: postfix 3.7
and dovecot 2.3 through rsyslog's RFC 3339 stamps, Debian 12's default; Exim's own mainlog for
exim-outbound) and expected.jsonl (what
`mailban replay --json` decides, which tests/test_cases.py checks and regenerates with
MAILBAN_REGEN_CASES=1 for review).

    python tests/cases/make_inputs.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

HERE = Path(__file__).resolve().parent
T0 = dt.datetime(2026, 11, 20, 8, 0, 0, tzinfo=dt.timezone.utc)


def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def sasl_failure(t: float, ip: str) -> tuple[float, str]:
    return t, (f"{stamp(t)} mx postfix/smtpd[4242]: warning: unknown[{ip}]: SASL LOGIN authentication failed: "
               "UGFzc3dvcmQ6")


def imap_failure(t: float, ip: str, user: str) -> tuple[float, str]:
    return t, (f"{stamp(t)} mx dovecot: imap-login: Disconnected: Aborted login by logging out (auth failed, "
               f"1 attempts in 2 secs): user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, session=<k3Jd8bZh{int(t):08d}>")


def imap_login(t: float, ip: str, user: str) -> tuple[float, str]:
    return t, (f"{stamp(t)} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, "
               f"mpid=17928, session=<2Lu3yRdh{int(t):08d}>")


def submission(t: float, n: int, ip: str, user: str) -> list[tuple[float, str]]:
    qid = f"{0xA0000 + n:05X}16E0{n % 10}"
    return [
        (t, f"{stamp(t)} mx postfix/smtpd[5151]: {qid}: client=unknown[{ip}], sasl_method=PLAIN, sasl_username={user}"),
        (t + 0.1, f"{stamp(t + 0.1)} mx postfix/qmgr[1200]: {qid}: from=<{user}>, size=1234, nrcpt=1 (queue active)"),
        (t + 0.5, f"{stamp(t + 0.5)} mx postfix/qmgr[1200]: {qid}: removed"),
    ]


def threshold() -> list[tuple[float, str]]:
    lines = [sasl_failure(10 + k * 30, "198.51.100.1") for k in range(5)]      # 5 in 2 minutes: banned
    lines += [sasl_failure(20 + k * 30, "198.51.100.2") for k in range(4)]     # 4: not banned
    lines += [sasl_failure(30 + k * 240, "198.51.100.3") for k in range(5)]    # 5 over 16 minutes: not banned
    return lines


def escalation() -> list[tuple[float, str]]:
    lines = [sasl_failure(10 + k, "198.51.100.7") for k in range(5)]           # banned for 1 h
    lines += [sasl_failure(3700 + k, "198.51.100.7") for k in range(5)]        # back after it: 2 h
    lines += [sasl_failure(11000 + k, "198.51.100.7") for k in range(5)]       # and again: 4 h
    return lines


def prefix_fold() -> list[tuple[float, str]]:
    lines = [sasl_failure(10 + k, "2001:db8:1:2::a") for k in range(5)]        # a single ban
    lines += [sasl_failure(20 + k, "2001:db8:1:2::b") for k in range(5)]       # a second one
    lines += [sasl_failure(30, "2001:db8:1:2::c")]                             # the third address: the /64
    lines += [sasl_failure(40 + k, "2001:db8:9:9::1") for k in range(5)]       # another /64: alone
    return lines


def valve() -> list[tuple[float, str]]:
    lines = []
    for n in range(8):  # eight addresses reach the threshold within a minute; the valve lets 3 through
        lines += [sasl_failure(10 + n * 5 + k, f"203.0.113.{n + 1}") for k in range(5)]
    lines += [sasl_failure(200 + k, "203.0.113.50") for k in range(5)]         # minutes later: acted on
    return lines


def account_guess_owner() -> list[tuple[float, str]]:
    user = "alice@example.test"
    lines = [imap_failure(100 + k * 20, f"198.51.100.{20 + k}", user) for k in range(10)]  # 10 guesses, 10 addresses
    lines += [imap_failure(300, "192.0.2.77", user), imap_login(310, "192.0.2.77", user)]  # the owner mistypes once
    lines += [imap_failure(320, "198.51.100.40", user)]                        # a new attacker: one guess
    return lines


def outbound_hold() -> list[tuple[float, str]]:
    lines = []
    for n in range(120):  # a newsletter account at 120 an hour: never acted on
        lines += submission(n * 30.0, n, "192.0.2.10", "news@example.test")
    for n in range(210):  # a stolen account: 210 messages in 35 minutes
        lines += submission(600 + n * 10.0, 1000 + n, f"198.51.100.{n % 25 + 100}", "bob@example.test")
    return lines


def exim_stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S +0000")


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def exim_id(n: int) -> str:
    """A 4.97+ message id (`1xZ7Xv-000000000rj-0e35`), distinct per n."""
    digits = ""
    for _ in range(4):
        n, r = divmod(n, 62)
        digits = _B62[r] + digits
    return f"1xZ7Xv-0000000{digits}-0e35"


def exim_message(t: float, n: int, arrival: str, rcpts: list[str], bounce: bool = False) -> list[tuple[float, str]]:
    """An Exim message in Exim's own mainlog format with +pid and log_timezone (so that the case does
    not depend on the local zone; Debian's /var/log/exim4/mainlog, the
    shapes of tests/filters/exim-outbound.log): the arrival, one delivery line per recipient
    (`=>`, then `->` for the others of the same delivery, `**` for a bounce), Completed."""
    mid = exim_id(n)
    pid = 3000 + n % 5000
    lines = [(t, f"{exim_stamp(t)} [{pid}] {mid} <= {arrival}")]
    for k, rcpt in enumerate(rcpts):
        mark = "**" if bounce and k == len(rcpts) - 1 else ("=>" if k == 0 else "->")
        tail = f"R=dnslookup T=remote_smtp: SMTP error from remote mail server after RCPT TO:<{rcpt}>: 550 no such user" \
            if mark == "**" else "R=dnslookup T=remote_smtp H=mx.example.org [203.0.113.5] C=\"250 OK\""
        lines.append((t + 1, f"{exim_stamp(t + 1)} [{pid + 1}] {mid} {mark} {rcpt} {tail}"))
    lines.append((t + 1, f"{exim_stamp(t + 1)} [{pid + 1}] {mid} Completed"))
    return lines


def exim_outbound() -> list[tuple[float, str]]:
    lines = []
    for n in range(150):  # a newsletter account: 150 messages an hour, 3 recipients each: never acted on
        lines += exim_message(n * 24.0, n, f"news@example.test H=(office) [192.0.2.10] P=esmtpsa "
                              "X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=dovecot_plain:news@example.test "
                              f"S=8123 T=\"Newsletter {n}\" for a{n}@example.org b{n}@example.org c{n}@example.org",
                              [f"a{n}@example.org", f"b{n}@example.org", f"c{n}@example.org"])
    for n in range(220):  # a stolen account: 220 messages in 37 minutes, from 25 addresses, some bounce
        lines += exim_message(600 + n * 10.0, 1000 + n, f"\"ceo A=dovecot_plain:news@example.test\"@example.test "
                              f"H=(pc{n % 25}) [198.51.100.{n % 25 + 100}] P=esmtpa A=dovecot_plain:bob@example.test "
                              f"S=2100 T=\"Invoice H=[192.0.2.10] U=news\" for x{n}@example.net",
                              [f"x{n}@example.net"], bounce=n % 3 == 0)
    for n in range(210):  # a hacked web application (www-data): 210 messages through sendmail in 35 minutes
        lines += exim_message(900 + n * 10.0, 2000 + n, "www-data@mx.example.test U=www-data P=local S=1500 "
                              f"T=\"You won U=news A=dovecot_plain:news@example.test\" for v{n}@example.com",
                              [f"v{n}@example.com"])
    # Exim's own bounces (U=Debian-exim, R=parent): not submissions of any uid
    for n in range(0, 220, 3):
        lines += exim_message(601 + n * 10.0, 5000 + n, f"<> R={exim_id(1000 + n)} U=Debian-exim P=local S=1700 "
                              "T=\"Mail delivery failed: returning message to sender\" for x@example.test",
                              ["bob@example.test"])
    return lines


SCENARIOS = {
    "threshold": threshold,
    "escalation": escalation,
    "prefix-fold": prefix_fold,
    "valve": valve,
    "account-guess-owner": account_guess_owner,
    "outbound-hold": outbound_hold,
    "exim-outbound": exim_outbound,
}


def main() -> None:
    for name, make in SCENARIOS.items():
        lines = sorted(make(), key=lambda item: item[0])
        (HERE / name).mkdir(exist_ok=True)
        (HERE / name / "input.log").write_text("".join(text + "\n" for _t, text in lines))


if __name__ == "__main__":
    main()
