"""Configuration loading: defaults, drop-ins, admin overrides, and refusals with file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailban import config
from mailban.core.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shipped_default_has_the_mail_abuse_jail() -> None:
    cfg = config.load(str(config.SHIPPED_DEFAULT))
    jails = {j.name: j for j in cfg.jails}
    jail = jails["mail-abuse"]
    assert jail.maxretry == 5 and jail.findtime == 600 and jail.bantime == 3600
    assert jail.kinds == {"auth-failure", "reject", "rate-limit", "protocol"}
    assert jail.actions == ("nft",)
    assert {"postfix", "postscreen", "dovecot", "dovecot-passdb", "sendmail"} <= {f.name for f in cfg.filters}
    guess = jails["account-guess"]
    assert (guess.key, guess.maxretry, guess.min_ips, guess.findtime, guess.ban_ips) == ("user", 10, 5, 600, True)
    for name, key in (("outbound-user", "user"), ("outbound-uid", "uid")):
        out = jails[name]
        assert (out.key, out.maxretry, out.findtime, out.kinds) == (key, 200, 3600, {"submission"})
        assert "queue-hold" in out.actions and "notify" in out.actions
    assert "sasl-disable" in jails["outbound-user"].actions


def test_drop_ins_override_and_add_jails(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", '[mailban]\nlogs = ["/x/mail.log"]\n[jail.a]\nkinds = ["reject"]\nmaxretry = 3\n')
    write(tmp_path / "jail.d" / "10-b.toml", '[jail.a]\nmaxretry = 7\n[jail.b]\nfilters = ["sendmail"]\nbantime = "2d"\n')
    cfg = config.load(str(main))
    jails = {j.name: j for j in cfg.jails}
    assert jails["a"].maxretry == 7 and jails["a"].kinds == {"reject"}
    assert jails["b"].bantime == 2 * 86400 and jails["b"].filters == {"sendmail"}
    assert cfg.settings.logs == ("/x/mail.log",)


def test_admin_filter_overrides_shipped_and_new_ones_work(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.x]\nfilters = [\"mine\", \"postfix\"]\n")
    write(tmp_path / "filters.d" / "postfix.toml",
          '[filter]\nprograms = ["postfix/smtpd"]\n[[rule]]\nid = "only"\nkind = "reject"\npattern = "nope <CLIENT>$"\n')
    write(tmp_path / "filters.d" / "mine.toml",
          '[filter]\nprograms = ["myapp"]\n[[rule]]\nid = "bad-login"\nkind = "auth-failure"\npattern = "bad login from <IP>$"\n')
    cfg = config.load(str(main))
    by_name = {f.name: f for f in cfg.filters}
    assert [r.id for r in by_name["postfix"].rules] == ["only"]
    assert by_name["mine"].path.startswith(str(tmp_path))


@pytest.mark.parametrize(
    "text, line, column, words",
    [
        ("[jail.a]\nkinds = [\"reject\"]\nmaxretry = 0\n", 3, 12, "at least 1"),
        ("[jail.a]\nkinds = [\"rejekt\"]\n", 2, 9, "unknown event kind 'rejekt'"),
        ("[jail.a]\nkinds = [\"reject\"]\nfindtime = \"10 parsecs\"\n", 3, 12, "duration"),
        ("[jail.a]\nkinds = [\"reject\"]\nactions = [\"nft\", \"carrier-pigeon\"]\n", 3, 11, "unknown action"),
        ("[jail.a]\nkinds = [\"reject\"]\nmaxretyr = 3\n", 3, 12, "unknown jail setting 'maxretyr'"),
        ("[mailban]\nignoreip = [\"10.0.0.0/33\"]\n", 2, 12, "not an IP address"),
        ("[mailban]\nlogs = \"/var/log/mail.log\"\n", 2, 8, "list of absolute"),
        ("[mailban]\nlogs = [\n", 3, 1, "TOML syntax error"),
        ("[jail.a]\nenabled = true\n", 1, 1, "selects nothing"),
        ("[jails.a]\n", 1, 1, "unknown table 'jails'"),
    ],
)
def test_bad_main_file_is_refused_with_position(tmp_path: Path, text: str, line: int, column: int, words: str) -> None:
    main = write(tmp_path / "mailban.toml", text)
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    err = exc.value
    assert (err.path, err.line, err.column) == (str(main), line, column), str(err)
    assert words in err.message


def test_bad_drop_in_names_the_drop_in(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.a]\nkinds = [\"reject\"]\n")
    bad = write(tmp_path / "jail.d" / "oops.toml", "\n\n[jail.a]\nbantime = -5\n")
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    assert (exc.value.path, exc.value.line) == (str(bad), 4)


@pytest.mark.parametrize(
    "rule, line, column, words",
    [
        ("id = \"r\"\nkind = \"reject\"\npattern = 'from <CLEINT>$'\n", 6, 17, "unknown placeholder <CLEINT>"),
        ("id = \"r\"\nkind = \"reject\"\npattern = 'from <IP> (x$'\n", 6, 22, "missing )"),
        ("id = \"r\"\nkind = \"rejection\"\npattern = 'x'\n", 5, 8, "`kind` must be one of"),
        ("id = \"R!\"\nkind = \"reject\"\npattern = 'x'\n", 4, 6, "`id`"),
        ("id = \"r\"\nkind = \"reject\"\npatern = 'x'\n", 6, 10, "unknown key 'patern'"),
    ],
)
def test_bad_filter_is_refused_with_position(tmp_path: Path, rule: str, line: int, column: int, words: str) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.a]\nkinds = [\"reject\"]\n")
    bad = write(tmp_path / "filters.d" / "broken.toml", '[filter]\nprograms = ["x"]\n[[rule]]\n' + rule)
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    err = exc.value
    assert (err.path, err.line, err.column) == (str(bad), line, column), str(err)
    assert words in err.message


def test_bad_action_option_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.a]\nkinds = [\"reject\"]\nactions = [\"nft\"]\n")
    bad = write(tmp_path / "actions.d" / "nft.toml", '[action]\ntype = "nft"\nverdict = "explode"\n')
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    assert (exc.value.path, exc.value.line) == (str(bad), 3)
    assert "verdict" in exc.value.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"))
