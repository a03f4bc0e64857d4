"""The `[mailban]` settings: one table of fields, each with how its value is read and checked.

`config._setting` validates every key of the `[mailban]` table through it (an unknown key, a
value of the wrong type: refused with file, line and column), and tests/test_docs.py checks that
the configuration reference (docs/configuration.md) documents exactly these settings and that
each is an attribute of config.Settings. Adding a setting: a field here, its Settings attribute
with its default, its line in the reference. The jail settings have their own table
(jail_fields.py).
"""

from __future__ import annotations

from typing import Any, Callable

from .jail_fields import networks

# A setting's reader: the value from the TOML file -> the Settings value; raises ValueError with
# the message the admin sees.
SettingReader = Callable[[Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def flag(key: str) -> SettingReader:
    def read(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"`{key}` must be true or false")
        return value
    return read


def one_of(key: str, allowed: tuple[Any, ...], message: str = "") -> SettingReader:
    def read(value: Any) -> Any:
        if not any(value == a and type(value) is type(a) for a in allowed):  # 1 is not true
            raise ValueError(message or f"`{key}` must be one of {', '.join(str(a) for a in allowed)}")
        return value
    return read


def path(key: str, empty: bool = False) -> SettingReader:
    def read(value: Any) -> str:
        if not isinstance(value, str) or not (value.startswith("/") or (empty and value == "")):
            raise ValueError(f"`{key}` must be an absolute path")
        return value
    return read


def text(key: str, what: str) -> SettingReader:
    def read(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"`{key}` must be {what}")
        return value
    return read


def mode(key: str) -> SettingReader:
    def read(value: Any) -> int:
        if not isinstance(value, str) or not value.isdigit() or int(value, 8) > 0o777:
            raise ValueError(f"`{key}` must be an octal string such as \"0600\"")
        return int(value, 8)
    return read


def name_list(key: str, absolute: bool = False) -> SettingReader:
    def read(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v and not v.startswith("-") for v in value):
            raise ValueError(f"`{key}` must be a list of names")
        if absolute and not all(v.startswith("/") for v in value):
            raise ValueError(f"`{key}` must be absolute paths")
        return tuple(value)
    return read


def _nets(key: str) -> SettingReader:
    def read(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"`{key}` must be a list of addresses or CIDR networks")
        return networks(value)
    return read


def _logs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
        raise ValueError("`logs` must be a list of absolute file paths")
    return tuple(value)


def _control_group(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("`control_group` must be a group name")
    if value:
        import grp

        try:
            grp.getgrnam(value)
        except KeyError:
            raise ValueError(f"there is no group {value!r} on this host") from None
    return value


def _max_bans(value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError("`max_bans_per_minute` must be a whole number of at least 1")
    return int(value)


def _metrics(value: Any) -> str:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if value != "" and (not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host):
        raise ValueError("`metrics` must be HOST:PORT (e.g. \"127.0.0.1:9234\"), or \"\" for none")
    return str(value)


def _local_uids(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and not any(c.isspace() for c in k)
            and _is_int(v) and 0 <= v < 2**32 for k, v in value.items()):
        raise ValueError("`local_uids` must be a table of login names and uids, e.g. { \"www-data\" = 33 }")
    return tuple(sorted(value.items()))


def _policy_listen(value: Any) -> str:
    from .policy.server import parse_listen

    try:
        if not isinstance(value, str) or (value and parse_listen(value) is None):
            raise ValueError
    except ValueError:
        raise ValueError("`policy_listen` must be \"unix:/absolute/path\", \"inet:HOST:PORT\" or \"\"") from None
    return value


def _policy_nice(value: Any) -> int:
    if not _is_int(value) or not -20 <= value <= 19:
        raise ValueError("`policy_nice` must be a whole number from -20 to 19 (nice steps from the daemon's)")
    return int(value)


def _ports(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(p) and 0 < p < 65536 for p in value):
        raise ValueError("`direct_smtp_ports` must be a non-empty list of port numbers")
    return tuple(sorted(set(value)))


def _mta_users(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and v and not any(c.isspace() for c in v) for v in value):
        raise ValueError("`direct_smtp_mta_users` must be a list of user names or uids")
    return tuple(value)


SETTINGS_FIELDS: dict[str, SettingReader] = {
    "logs": _logs,
    "state_dir": path("state_dir"),
    "socket": path("socket"),
    "socket_mode": mode("socket_mode"),
    "control_group": _control_group,
    "ignoreip": _nets("ignoreip"),
    "loglevel": one_of("loglevel", ("debug", "info", "warning", "error")),
    "read_from": one_of("read_from", ("end", "beginning"), "`read_from` must be \"end\" or \"beginning\""),
    "shipped_jails": flag("shipped_jails"),
    "run_without_jails": flag("run_without_jails"),
    "protect_own": flag("protect_own"),
    "max_bans_per_minute": _max_bans,
    "local_uids": _local_uids,
    "metrics": _metrics,
    "journal": one_of("journal", ("auto", True, False), "`journal` must be \"auto\", true or false"),
    "journal_units": name_list("journal_units"),
    "journal_identifiers": name_list("journal_identifiers"),
    "journal_files": name_list("journal_files", absolute=True),
    "journal_directory": path("journal_directory", empty=True),
    "journal_trust": one_of("journal_trust", ("strict", "off"), "`journal_trust` must be \"strict\" or \"off\""),
    "policy_listen": _policy_listen,
    "policy_socket_mode": mode("policy_socket_mode"),
    "policy_socket_owner": text("policy_socket_owner", "a user name"),
    "policy_nice": _policy_nice,
    "direct_smtp": flag("direct_smtp"),
    "direct_smtp_ports": _ports,
    "direct_smtp_mta_users": _mta_users,
    "direct_smtp_allow": _nets("direct_smtp_allow"),
    "block_direct_smtp": one_of("block_direct_smtp", ("per-uid", "all-but-mta"),
                                "`block_direct_smtp` must be \"per-uid\" (the jail's direct-smtp-block action only) "
                                "or \"all-but-mta\" (refuse every uid but the MTA's)"),
}


def shown(settings: Any) -> dict[str, Any]:
    """Every setting as a JSON value (`mailban check --json`): modes as the octal text written,
    networks as text, tables as tables."""
    out: dict[str, Any] = {}
    for name in SETTINGS_FIELDS:
        value = getattr(settings, name)
        if name in ("socket_mode", "policy_socket_mode"):
            value = f"{value:04o}"
        elif name == "local_uids":
            value = dict(value)
        elif isinstance(value, tuple):
            value = [v if isinstance(v, (int, str)) else str(v) for v in value]
        out[name] = value
    return out
