"""`mta = "auto"`: which MTA a host runs, from real Debian roots (Exim 4.96 and 4.98 as Debian's
exim4 packages install them, this machine's postfix) and from built trees for the layouts not at
hand here (RHEL's alternatives, cPanel's exim, sendmail, leftovers of a removed MTA, two MTAs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailban import mta_detect
from mailban.mta_detect import choose, detect


def tree(root: Path, files: list[str], links: dict[str, str] | None = None) -> Path:
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        if f.endswith("/"):
            p.mkdir(exist_ok=True)
        else:
            p.write_text("")
    for link, target in (links or {}).items():
        p = root / link
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)
    return root


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_debian_exim4_roots(suite: str) -> None:
    from tests.mta import exim

    if os.geteuid() != 0:
        pytest.skip("building the Debian root needs root")
    root = exim.ensure_root(suite)
    got = detect(str(root))
    assert got.mta == "exim", got
    assert got.evidence == "/usr/sbin/sendmail -> /usr/sbin/exim4"


def test_this_machines_postfix() -> None:
    # tests/mta/install.sh installs Debian's postfix here: /usr/sbin/sendmail is its own program
    if not (os.path.isfile("/usr/sbin/postconf") and os.path.isfile("/etc/postfix/main.cf")):
        pytest.skip("postfix is not installed (tests/mta/install.sh)")
    if os.path.lexists("/usr/sbin/exim4") or os.path.islink("/usr/sbin/sendmail"):
        pytest.skip("another MTA's sendmail here")
    got = detect("/")
    assert got.mta == "postfix", got
    assert "postconf" in got.evidence


def test_rhel_alternatives_and_cpanel(tmp_path: Path) -> None:
    rhel = tree(tmp_path / "rhel", ["usr/sbin/sendmail.postfix", "usr/sbin/sendmail.exim", "usr/sbin/postconf",
                                    "etc/postfix/main.cf", "usr/sbin/exim", "etc/exim/exim.conf"],
                {"usr/sbin/sendmail": "/etc/alternatives/mta", "etc/alternatives/mta": "/usr/sbin/sendmail.exim"})
    # both installed: the alternative that receives local mail decides
    assert detect(str(rhel)) == ("exim", "/usr/sbin/sendmail -> /etc/alternatives/mta -> /usr/sbin/sendmail.exim")
    os.unlink(rhel / "etc/alternatives/mta")
    os.symlink("/usr/sbin/sendmail.postfix", rhel / "etc/alternatives/mta")
    assert detect(str(rhel)).mta == "postfix"
    cpanel = tree(tmp_path / "cpanel", ["usr/sbin/exim", "etc/exim.conf"], {"usr/sbin/sendmail": "exim"})
    assert detect(str(cpanel)).mta == "exim"


def test_sendmail(tmp_path: Path) -> None:
    root = tree(tmp_path, ["usr/libexec/sendmail/sendmail", "etc/mail/sendmail.cf"],
                {"usr/sbin/sendmail-mta": "../libexec/sendmail/sendmail", "usr/sbin/sendmail": "sendmail-mta"})
    assert detect(str(root)).mta == "sendmail"


def test_leftovers_and_ambiguity(tmp_path: Path) -> None:
    # postfix removed but not purged (main.cf stays), exim4 installed, sendmail a plain file
    left = tree(tmp_path / "left", ["etc/postfix/main.cf", "usr/sbin/exim4", "etc/exim4/", "usr/sbin/sendmail"])
    assert detect(str(left)) == ("exim", "/usr/sbin/exim4 and /etc/exim4 (the only MTA installed)")
    both = tree(tmp_path / "both", ["usr/sbin/postconf", "etc/postfix/main.cf", "usr/sbin/exim4", "etc/exim4/"])
    assert detect(str(both)).mta is None and "several" in detect(str(both)).evidence
    assert detect(str(tree(tmp_path / "none", ["usr/sbin/exim4"]))).mta is None  # a program alone
    # a link that climbs out of the root stays inside it
    escape = tree(tmp_path / "esc", ["usr/sbin/sendmail.postfix"],
                  {"usr/sbin/sendmail": "../../../../../../../../usr/sbin/sendmail.postfix"})
    assert detect(str(escape)) == ("postfix", "/usr/sbin/sendmail -> /usr/sbin/sendmail.postfix")
    dangling = tree(tmp_path / "dangling", [], {"usr/sbin/sendmail": "exim4"})  # proves nothing
    assert detect(str(dangling)).mta is None
    loop = tree(tmp_path / "loop", [], {"usr/sbin/sendmail": "sendmail"})
    assert detect(str(loop)).mta is None


def test_explicit_setting_wins_and_auto_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected("exim", "/usr/sbin/sendmail -> exim4"))
    assert choose("postfix", ("postfix", "exim")) == ("postfix", None)
    assert choose("auto", ("postfix", "exim")) == ("exim", "detected exim: /usr/sbin/sendmail -> exim4")
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected("sendmail", "x"))
    mta, why = choose("auto", ("postfix", "exim"))
    assert mta == "postfix" and why is not None and "no mode" in why
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected(None, "no MTA found"))
    assert choose("auto", ("postfix", "exim", "sendmail")) == ("postfix", "no MTA found; postfix assumed")


def test_the_actions_follow_the_detected_mta(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mailban.actions.base import ActionContext
    from mailban.actions.defer import DeferAction
    from mailban.actions.queue_hold import QueueHoldAction
    from mailban.actions.sasl_disable import SaslDisableAction

    ctx = ActionContext(state_dir=str(tmp_path))
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected("exim", "/usr/sbin/sendmail -> /usr/sbin/exim4"))
    hold = QueueHoldAction("queue-hold", {"mta": "auto"}, ctx)
    assert hold.mta == "exim" and hold.mta_detected == "detected exim: /usr/sbin/sendmail -> /usr/sbin/exim4"
    assert QueueHoldAction("queue-hold", {}, ctx).mta == "exim"  # auto is the default
    assert QueueHoldAction("queue-hold", {"mta": "postfix"}, ctx).mta == "postfix"  # the setting wins
    defer = DeferAction("defer", {"mta": "auto"})
    assert defer.mta == "exim" and defer.maps["ip"] == "/var/lib/mailban/exim/deferred-hosts"
    disable = SaslDisableAction("sasl-disable", {})
    assert (disable.exim_list, disable.exim_dir) == ("/var/lib/mailban/exim/disabled-users",
                                                     "/var/lib/mailban/exim/disabled-users.d")
    assert SaslDisableAction("sasl-disable", {"exim_list": ""}).exim_dir == ""  # "" leaves Exim out
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected("postfix", "/usr/sbin/postconf ..."))
    assert QueueHoldAction("queue-hold", {}, ctx).mta == "postfix"
    assert DeferAction("defer", {}).mta == "postfix"
    assert SaslDisableAction("sasl-disable", {}).exim_list == ""
    with pytest.raises(ValueError):
        QueueHoldAction.validate({"mta": "qmail"})


def test_check_says_what_it_detected(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mailban.cli import main

    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected("exim", "/usr/sbin/sendmail -> /usr/sbin/exim4"))
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert ("  mta: exim, detected (/usr/sbin/sendmail -> /usr/sbin/exim4); followed by defer, queue-hold, "
            "sasl-disable") in out
    assert main(["check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mta"] == {
        "detected": "exim", "evidence": "/usr/sbin/sendmail -> /usr/sbin/exim4",
        "followed_by": ["defer", "queue-hold", "sasl-disable"]}
    monkeypatch.setattr(mta_detect, "detected", lambda: mta_detect.Detected(None, "several MTAs installed (exim, postfix): set `mta`"))
    assert main(["check"]) == 0
    assert "mta: none detected, postfix assumed (several MTAs installed" in capsys.readouterr().out
