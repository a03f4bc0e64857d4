"""sasl-disable's dovecot check on 2.3 and 2.4: `doveconf -n` read, the deny passdb found, and the
block to add given in the syntax of the version found (2.4 refuses 2.3's `args =`: "passdb { } is
missing section name"). The doveconf texts below are the passdb parts of what the real doveconf
2.3.19.1 (Debian 12) and 2.4.1-4 (Debian 13) printed for the test harnesses' configurations
(tests/mta/postfix_dovecot.py, tests/mta/trixie.py); tests/test_outbound_e2e.py runs the real
programs."""

from __future__ import annotations

import sys
from pathlib import Path

from mailban.actions.sasl_disable import SaslDisableAction, dovecot_snippet, parse_doveconf

DOVECONF_23 = """\
# 2.3.19.1 (9b53102964): /var/lib/mbmta/pf-dmvxsq3s/dovecot.conf
# Pigeonhole version 0.5.19 (4eae2f79)
# OS: Linux 6.18.44-fc-v1098 x86_64 Debian 12.11
auth_mechanisms = plain login
passdb {
  args = /var/lib/mbmta/pf-dmvxsq3s/deny
  deny = yes
  driver = passwd-file
}
passdb {
  args = scheme=PLAIN username_format=%u /var/lib/mbmta/pf-dmvxsq3s/users
  driver = passwd-file
}
protocols = imap pop3
"""

DOVECONF_24 = """\
# 2.4.1-4 (7d8c0e5759): /etc/dovecot/mailban-test.conf
# Pigeonhole version 2.4.1-4 (0a86619f)
# OS: Linux 6.18.44-fc-v1098 x86_64 Debian 13.8 overlay
dovecot_config_version = 2.4.1
passdb mailban-deny {
  deny = yes
  driver = passwd-file
  passwd_file_path = /etc/dovecot/mailban-deny
}
passdb passwd-file {
  passwd_file_path = /etc/dovecot/mailban-users
}
userdb static {
  fields {
    uid = nobody
  }
}
"""


def without_deny(text: str) -> str:
    return text.replace("  deny = yes\n", "")


def action(tmp_path: Path, doveconf_text: str | None, deny: str) -> SaslDisableAction:
    options: dict = {"dovecot_deny_file": deny, "postfix_map": "", "kick": []}
    if doveconf_text is not None:
        out = tmp_path / "doveconf.out"
        out.write_text(doveconf_text)
        # a stand-in doveconf: prints the captured text (the action appends -n)
        options["doveconf"] = [sys.executable, "-c", f"print(open({str(out)!r}).read(), end='')"]
    return SaslDisableAction("sasl-disable", options)


def test_doveconf_parsed_on_both_versions() -> None:
    assert parse_doveconf(DOVECONF_23) == ("2.3.19.1", ["/var/lib/mbmta/pf-dmvxsq3s/deny"])
    assert parse_doveconf(DOVECONF_24) == ("2.4.1-4", ["/etc/dovecot/mailban-deny"])
    assert parse_doveconf(without_deny(DOVECONF_23))[1] == []
    assert parse_doveconf(without_deny(DOVECONF_24))[1] == []
    assert parse_doveconf("") == ("", [])


def test_snippet_follows_the_version() -> None:
    assert "passwd_file_path = /d" in dovecot_snippet("2.4.1-4", "/d")
    assert dovecot_snippet("2.4.1-4", "/d").startswith("passdb mailban-deny {")
    assert "args" not in dovecot_snippet("2.4.1-4", "/d")
    assert "args = /d" in dovecot_snippet("2.3.19.1", "/d")
    assert dovecot_snippet("2.3.19.1", "/d").startswith("passdb {\n")
    assert "passwd_file_path" in dovecot_snippet("2.5.0", "/d")


def test_configured_deny_passdb_gives_no_warning(tmp_path: Path) -> None:
    a = action(tmp_path, DOVECONF_23, "/var/lib/mbmta/pf-dmvxsq3s/deny")
    assert a.check_dovecot() is None and a.health() is None
    # a chrooted dovecot names the file from inside its root
    (tmp_path / "root/etc/dovecot").mkdir(parents=True)
    a = action(tmp_path, DOVECONF_24, str(tmp_path / "root/etc/dovecot/mailban-deny"))
    a.start([])
    assert a.health() is None


def test_missing_deny_passdb_is_reported_in_the_versions_syntax(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    deny = str(tmp_path / "etc/mailban-deny")
    a = action(tmp_path, without_deny(DOVECONF_24), deny)
    a.start([])
    health = a.health() or ""
    assert "dovecot 2.4.1-4 does not read" in health
    assert f"passdb mailban-deny {{ driver = passwd-file passwd_file_path = {deny} deny = yes }}" in health
    a = action(tmp_path, without_deny(DOVECONF_23), deny)
    a.start([])
    health = a.health() or ""
    assert "dovecot 2.3.19.1 does not read" in health
    assert f"passdb {{ driver = passwd-file args = {deny} deny = yes }}" in health


def test_no_check_without_doveconf_or_when_it_cannot_run(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    a = action(tmp_path, None, str(tmp_path / "etc/deny"))
    a.start([])
    assert a.check_dovecot() is None and a.health() is None
    a = SaslDisableAction("s", {"dovecot_deny_file": str(tmp_path / "etc/deny"), "postfix_map": "", "kick": [],
                                "doveconf": ["/nonexistent/doveconf"]})
    a.start([])
    assert a.health() is None
