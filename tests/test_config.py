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


# --- the admin's files are an overlay on the shipped defaults (issue 14) -----------------------
SASL_FAIL = "Nov 20 08:00:{s:02d} mx postfix/smtpd[1]: warning: unknown[198.51.100.9]: SASL LOGIN authentication failed: x\n"
SHIPPED_JAILS = {"mail-abuse", "slow-guess", "account-guess", "outbound-user", "outbound-uid", "direct-smtp"}


def _bans(cfg: config.Config, lines: str) -> list[str]:
    from mailban.core.syslog import utc_to_epoch

    pipe = cfg.pipeline(1795600000.0, utc_to_epoch)
    return [ban.key for line in lines.splitlines() for ban in pipe.feed(line.encode())[1]]


def test_a_main_file_with_only_settings_keeps_the_shipped_jails(tmp_path: Path) -> None:
    """Adding `ignoreip` must not silently leave the daemon without jails: eight SASL failures ban."""
    main = write(tmp_path / "mailban.toml", '[mailban]\nignoreip = ["192.0.2.0/24"]\n')
    cfg = config.load(str(main))
    assert {j.name for j in cfg.jails if j.enabled} == SHIPPED_JAILS
    assert [str(n) for n in cfg.settings.ignoreip] == ["192.0.2.0/24"]
    assert _bans(cfg, "".join(SASL_FAIL.format(s=s) for s in range(8))) == ["198.51.100.9"]


def test_tuning_one_key_of_a_shipped_jail_keeps_the_others(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.mail-abuse]\nmaxretry = 3\n")
    cfg = config.load(str(main))
    jail = {j.name: j for j in cfg.jails}["mail-abuse"]
    assert (jail.maxretry, jail.findtime, jail.bantime, jail.actions) == (3, 600, 3600, ("nft",))
    assert jail.kinds == {"auth-failure", "reject", "rate-limit", "protocol"}
    assert cfg.origins[("jail", "mail-abuse", "maxretry")] == (3, f"{main}:2")
    assert cfg.origins[("jail", "mail-abuse", "findtime")] == ("10m", "shipped")
    assert _bans(cfg, "".join(SASL_FAIL.format(s=s) for s in range(3))) == ["198.51.100.9"]


def test_enabled_false_turns_one_jail_off_and_no_jail_at_all_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.slow-guess]\nenabled = false\n")
    assert {j.name for j in config.load(str(main)).jails if j.enabled} == SHIPPED_JAILS - {"slow-guess"}
    off = "".join(f"[jail.{name}]\nenabled = false\n" for name in sorted(SHIPPED_JAILS))
    write(main, off)
    with pytest.raises(ConfigError, match="runs no jail at all"):
        config.load(str(main))
    write(main, "[mailban]\nshipped_jails = false\n")
    with pytest.raises(ConfigError, match="runs no jail at all") as exc:
        config.load(str(main))
    assert (exc.value.line, exc.value.column) == (2, 17)
    write(main, "[mailban]\nrun_without_jails = true\n" + off)
    assert not any(j.enabled for j in config.load(str(main)).jails)


def test_shipped_jails_false_starts_from_the_admins_jails_only(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", '[mailban]\nshipped_jails = false\n[jail.mine]\nkinds = ["reject"]\n')
    assert [j.name for j in config.load(str(main)).jails] == ["mine"]


def test_every_error_of_a_file_is_reported_with_suggestions(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", '[mailban]\nignorip = ["192.0.2.1"]\n\n[jail.mail-abuse]\n'
                                             'findtme = "5m"\nbantime = "forever"\nactions = ["nope"]\n')
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    found = [(e.line, e.message.split(";")[0] + (";" + e.message.split(";")[1] if "did you mean" in e.message else ""))
             for e in exc.value.errors]
    assert found == [
        (2, "unknown setting 'ignorip'; did you mean 'ignoreip'?"),
        (5, "unknown jail setting 'findtme'; did you mean 'findtime'?"),
        (6, "cannot read 'forever' as a duration"),
        (7, "unknown action 'nope'"),
    ]
    assert str(exc.value).count("\n") == 3  # one line per error


def test_an_unquoted_duration_gets_a_sentence_not_a_parser_message(tmp_path: Path) -> None:
    main = write(tmp_path / "mailban.toml", "[jail.mail-abuse]\nfindtime = 10m   # ten minutes\n")
    with pytest.raises(ConfigError) as exc:
        config.load(str(main))
    assert exc.value.line == 2
    assert exc.value.message == 'durations are strings in TOML: write findtime = "10m" (with the quotes)'


def test_check_prints_the_effective_configuration_and_where_each_key_came_from(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mailban import __version__

    main = write(tmp_path / "mailban.toml", '[mailban]\nignoreip = ["192.0.2.0/24"]\n\n[jail.mail-abuse]\nmaxretry = 3\n')
    out = subprocess.run([sys.executable, "-m", "mailban", "check", "--config", str(main)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"mailban {__version__}: configuration OK: {main} (on top of the shipped defaults)\n")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert f'ignoreip = ["192.0.2.0/24"] # {main}:2' in lines
    assert ('logs = ["/var/log/mail.log", "/var/log/maillog", "/var/log/exim4/mainlog", '
            '"/var/log/exim_mainlog", "/var/log/exim/main.log", "/var/log/exim/mainlog"] # shipped') in lines
    assert f"maxretry = 3 # {main}:5" in lines
    assert 'findtime = "10m" # shipped' in lines
    version = subprocess.run([sys.executable, "-m", "mailban", "--version"], capture_output=True, text=True)
    assert version.stdout == f"mailban {__version__}\n"
