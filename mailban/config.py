"""Load mailban's configuration: the main file, jail.d drop-ins, filters and actions.

Inputs: a config path (default /etc/mailban/mailban.toml; the shipped default when that does not
exist). Filters and actions are looked up in `<confdir>/filters.d` and `<confdir>/actions.d`
first, then among the files shipped inside the package; an admin file overrides a shipped file
of the same name. Output: a validated `Config`, or a `ConfigError` naming file, line and column.
Must never: half-apply a bad file. The daemon keeps its last good Config when loading fails.
Size: loading the three layers (shipped default, mailban.toml, jail.d) and refusing each bad key
with its file, line and column; jail keys are in jail_fields.py, the TOML reader in core/tomldoc.py.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .core.durations import parse_duration
from .core.errors import ConfigError
from .core.filters import Filter, FilterSet, build_filter
from .core.needs import quiet_rules
from .core.jails import IgnoreList, Jail, JailSpec
from .core.decisions import Valve
from .core.pipeline import Pipeline
from .core.records import KINDS
from .core.syslog import LocalToEpoch, SyslogParser
from .core.tomldoc import TomlDoc, parse_toml
from .jail_fields import JAIL_FIELDS, Names
from .settings_fields import SETTINGS_FIELDS
from . import localusers
from .speedups import speedups

DEFAULT_CONFIG = "/etc/mailban/mailban.toml"
PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DEFAULT = PACKAGE_DIR / "default.toml"


def shipped_dir(kind: str) -> Path:
    """Where the shipped `filters.d`/`actions.d` live: inside the installed package, or at the
    top of the source tree when running from a checkout."""
    inside = PACKAGE_DIR / kind
    return inside if inside.is_dir() else PACKAGE_DIR.parent / kind


@dataclass(frozen=True)
class Settings:
    logs: tuple[str, ...] = ("/var/log/mail.log",)
    state_dir: str = "/var/lib/mailban"
    socket: str = "/run/mailban/mailban.sock"
    socket_mode: int = 0o600
    ignoreip: tuple[Any, ...] = ()
    loglevel: str = "info"
    read_from: str = "end"
    # "auto": the journal when none of `logs` exists (Debian 12 without rsyslog), else the files.
    journal: str | bool = "auto"
    journal_units: tuple[str, ...] = ("postfix@-.service", "postfix.service", "dovecot.service", "sendmail.service",
                                      "exim4.service", "exim.service")
    journal_identifiers: tuple[str, ...] = ()
    journal_files: tuple[str, ...] = ()
    journal_directory: str = ""
    journal_trust: str = "strict"
    metrics: str = "127.0.0.1:9234"
    # Never ban this host's own addresses nor postfix's mynetworks (read at start and reload).
    protect_own: bool = True
    # Safety valve: at most this many new decisions per jail and minute; beyond it mailban
    # records and reports instead of acting (a broken filter must not ban the internet).
    max_bans_per_minute: int = 600
    # Members of this group may use the control socket (status, ban, unban...); "" for root and
    # mailban's own user only.
    control_group: str = ""
    # The shipped jails are the base the admin's files change; false starts from none.
    shipped_jails: bool = True
    # A configuration without a single enabled jail is refused unless this says it is meant.
    run_without_jails: bool = False
    # Local login names -> uids, consulted before the password database when a login name must
    # become a uid (Exim's `U=www-data` on local submissions; mailban/localusers.py): for a log
    # replayed on another host, or names that host's NSS cannot resolve.
    local_uids: tuple[tuple[str, int], ...] = ()
    # The Postfix policy service (mailban/policy, docs/policy.md): "unix:/path" or
    # "inet:HOST:PORT"; "" runs none. The socket's mode and owner let postfix connect.
    policy_listen: str = ""
    policy_socket_mode: int = 0o666
    policy_socket_owner: str = ""
    # Nice steps from the daemon's for the service's process: negative answers postfix before
    # the daemon's log reading when both want the CPU (mailban/policy/sched.py). 0 by default:
    # bench/policy.py --log-load showed no gain from -5 (docs/policy.md).
    policy_nice: int = 0
    # Direct outbound SMTP per local uid (docs/direct-smtp.md): an nft output chain counts new
    # connections to these remote ports by the socket's owner, except the MTA's users and the
    # allowed destinations; "all-but-mta" also refuses them all (the counting still reports).
    direct_smtp: bool = False
    direct_smtp_ports: tuple[int, ...] = (25, 465, 587)
    direct_smtp_mta_users: tuple[str, ...] = ("postfix", "Debian-exim", "exim", "smmta", "root")
    direct_smtp_allow: tuple[Any, ...] = ()
    block_direct_smtp: str = "per-uid"


@dataclass(frozen=True)
class ClusterSettings:
    """The `[cluster]` table: the Redis that a fleet of nodes shares (see docs/cluster.md)."""

    url: str
    # The password may come from the URL, this key, or a file readable by root only (so that
    # a config file copied around the fleet need not carry the secret).
    password: str = ""
    password_file: str = ""
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "node")
    prefix: str = "mailban"
    stream_maxlen: int = 100_000
    timeout: float = 2.0
    heartbeat: float = 5.0
    tls_ca: str = ""


@dataclass(frozen=True)
class ActionDef:
    name: str
    type: str
    options: dict[str, Any]
    path: str
    doc: TomlDoc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Config:
    path: str
    settings: Settings
    jails: tuple[JailSpec, ...]
    filters: tuple[Filter, ...]
    actions: dict[str, ActionDef]
    files: tuple[str, ...] = ()
    cluster: ClusterSettings | None = None
    # Each key some file sets, with the value that holds and where it was written last:
    # ("jail", "mail-abuse", "maxretry") -> (3, "/etc/mailban/mailban.toml:4"), or "shipped"
    # for mailban/default.toml (for `mailban check`).
    origins: dict[tuple[str, ...], tuple[Any, str]] = field(default_factory=dict, compare=False)

    def jail(self, spec: JailSpec, never_ban: tuple[Any, ...] = ()) -> Jail:
        """A jail counting by `spec`, ignoring the global and the jail's own `ignoreip` and
        `never_ban`."""
        return Jail(spec, IgnoreList(tuple(self.settings.ignoreip) + tuple(never_ban) + tuple(spec.ignoreip)))

    def pipeline(self, now: float, to_epoch: LocalToEpoch, never_ban: tuple[Any, ...] = ()) -> Pipeline:
        """The pipeline this configuration describes; `never_ban` adds networks (the host's own
        addresses, postfix's mynetworks) to every jail's ignore list."""
        jails = [
            self.jail(spec, never_ban)
            for spec in self.jails
            if spec.enabled and not spec.inline  # inline jails count at the policy service
        ]
        from .actions import registry  # validated these actions at load: already imported

        fast = speedups()
        # Rules whose events no jail and no correlation needs build none (core/needs.py).
        filters = FilterSet(list(self.filters), quiet_rules(self.filters, self.jails))
        return Pipeline(SyslogParser(now, to_epoch, fast), filters, jails, fast=fast,
                        valve=Valve(self.settings.max_bans_per_minute),
                        uid_of=localusers.resolver(dict(self.settings.local_uids)),
                        hold_actions=frozenset(name for name, action in self.actions.items()
                                               if registry.load(action.type).holds_mail))


def _read(path: Path) -> TomlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), line, 1, "the file is not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(path), 1, 1, f"cannot read the file: {exc.strerror}") from None
    return parse_toml(text, str(path))


def _lookup(kind: str, confdir: Path) -> dict[str, Path]:
    """name -> file, admin files first (they override shipped files of the same name)."""
    found: dict[str, Path] = {}
    for directory in (shipped_dir(kind), confdir / kind):
        if directory.is_dir():
            for entry in sorted(directory.glob("*.toml")):
                found[entry.stem] = entry
    return found


def load_filter_file(path: Path) -> Filter:
    return build_filter(path.stem, _read(path))


def load_filters(confdir: Path, only: list[str] | None = None) -> list[Filter]:
    files = _lookup("filters.d", confdir)
    if only:
        chosen: list[Filter] = []
        for name in only:
            if os.sep in name or name.endswith(".toml"):
                chosen.append(load_filter_file(Path(name)))
            elif name in files:
                chosen.append(load_filter_file(files[name]))
            else:
                raise ConfigError(name, 1, 1, f"no filter named {name!r}; known: {', '.join(sorted(files))}")
        return chosen
    return [load_filter_file(p) for p in files.values()]


def load_actions(confdir: Path) -> dict[str, ActionDef]:
    actions: dict[str, ActionDef] = {}
    for name, path in _lookup("actions.d", confdir).items():
        doc = _read(path)
        head = doc.data.get("action")
        if not isinstance(head, dict) or not isinstance(head.get("type"), str):
            raise doc.error(("action",), "an action file needs an [action] table with a `type`")
        for key in doc.data:
            if key != "action":
                raise doc.error((key,), f"unknown table {key!r}; an action file has only [action]")
        options = {k: v for k, v in head.items() if k != "type"}
        actions[name] = ActionDef(name, head["type"], options, str(path), doc)
    return actions


def load(path: str | None = None) -> Config:
    """Load and validate the whole configuration. Raises ConfigError (with every error found).

    The admin's files are an overlay on the shipped defaults (mailban/default.toml), as
    fail2ban's `.local` files are on its `.conf` files: the shipped file is read first, then the
    main file, then `jail.d/*.toml` in name order; a key written later replaces the same key
    written earlier, a jail nobody mentions keeps its shipped settings, and `enabled = false`
    turns one off. `shipped_jails = false` in [mailban] starts from no jails instead."""
    if path is None:
        main = Path(DEFAULT_CONFIG)
        confdir = main.parent
        if not main.exists():
            main = SHIPPED_DEFAULT
    else:
        main = Path(path)
        confdir = main.parent
        if not main.exists():
            raise ConfigError(str(main), 1, 1, "the configuration file does not exist")
    shipped = _read(SHIPPED_DEFAULT)
    admin = [] if main.resolve() == SHIPPED_DEFAULT.resolve() else [_read(main)]
    jail_dir = confdir / "jail.d"
    if jail_dir.is_dir():
        admin.extend(_read(p) for p in sorted(jail_dir.glob("*.toml")))
    filters = load_filters(confdir)
    actions = load_actions(confdir)
    errors: list[ConfigError] = []
    origins: dict[tuple[str, ...], tuple[Any, str]] = {}
    settings_src: dict[str, tuple[Any, TomlDoc]] = {}
    cluster_src: dict[str, tuple[Any, TomlDoc]] = {}
    jail_src: dict[str, dict[str, tuple[Any, TomlDoc]]] = {}
    for doc in [shipped, *admin]:
        def origin(keys: tuple[str, ...], value: Any, doc: TomlDoc = doc) -> tuple[Any, str]:
            return value, "shipped" if doc is shipped else f"{doc.path}:{doc.where(keys)[0]}"

        for key in doc.data:
            if key not in ("mailban", "jail", "cluster"):
                errors.append(doc.error((key,), f"unknown table {key!r}; expected [mailban], [cluster] or "
                                                f"[jail.NAME]{_did_you_mean(key, ('mailban', 'cluster', 'jail'))}"))
        section = doc.data.get("mailban", {})
        if not isinstance(section, dict):
            errors.append(doc.error(("mailban",), "[mailban] must be a table"))
            section = {}
        for key, value in section.items():
            settings_src[key] = (value, doc)
            origins[("mailban", key)] = origin(("mailban", key), value)
        cluster = doc.data.get("cluster", {})
        if not isinstance(cluster, dict):
            errors.append(doc.error(("cluster",), "[cluster] must be a table"))
            cluster = {}
        for key, value in cluster.items():
            cluster_src[key] = (value, doc)
            origins[("cluster", key)] = origin(("cluster", key), value)
        jails = doc.data.get("jail", {})
        if not isinstance(jails, dict):
            errors.append(doc.error(("jail",), "jails are tables: [jail.NAME]"))
            continue
        for name, table in jails.items():
            if not isinstance(table, dict):
                errors.append(doc.error(("jail", name), f"jail {name!r} must be a table"))
                continue
            entry = jail_src.setdefault(name, {})
            for key, value in table.items():
                entry[key] = (value, doc)
                origins[("jail", name, key)] = origin(("jail", name, key), value)
    settings = _settings(settings_src, errors)
    if not settings.shipped_jails:
        # only the jails of the admin's files, and only the keys those files write
        jail_src = {name: mine for name, src in jail_src.items()
                    if (mine := {k: v for k, v in src.items() if v[1] is not shipped})}
        origins = {k: v for k, v in origins.items() if k[0] != "jail" or v[1] != "shipped"}
    filter_names = {f.name for f in filters}
    rule_names = {f"{f.name}.{r.id}" for f in filters for r in f.rules} | {r.id for f in filters for r in f.rules}
    specs = []
    for name, src in sorted(jail_src.items()):
        # A shipped jail may name a rule that an admin's filter of the same name no longer has:
        # that name is dropped there (the admin's own files are still checked name by name).
        src = {key: (_known_only(key, value, filter_names, rule_names) if doc is shipped else value, doc)
               for key, (value, doc) in src.items()}
        spec = _jail(name, src, filter_names, rule_names, actions, errors)
        if spec is not None:
            specs.append(spec)
    for spec in specs:
        if spec.enabled:
            for action in spec.actions + (spec.ip_actions if spec.ban_ips else ()):
                try:
                    _check_action(actions[action])
                except ConfigError as exc:
                    errors.append(exc)
    cluster_settings = None
    try:
        cluster_settings = _cluster(cluster_src)
    except ConfigError as exc:
        errors.append(exc)
    if not errors and not any(spec.enabled for spec in specs) and not settings.run_without_jails:
        # Eight SASL failures banning nothing, silently, is the worst way to find out.
        doc = admin[0] if admin else shipped
        where = ("mailban", "shipped_jails") if ("mailban", "shipped_jails") in origins else ("mailban",)
        errors.append(doc.error(where, "this configuration runs no jail at all, so nothing would ever be banned; "
                                       "enable one (`enabled = true`), or set `run_without_jails = true` in "
                                       "[mailban] if that is what you want"))
    if errors:
        raise ConfigError.of(errors)
    return Config(str(main), settings, tuple(specs), tuple(filters), actions,
                  tuple(d.path for d in [shipped, *admin]), cluster_settings, origins)


def _known_only(key: str, value: Any, filter_names: set[str], rule_names: set[str]) -> Any:
    """A shipped jail's `weights`/`exclude` without the filter and rule names that do not exist."""
    known = filter_names | rule_names
    if key == "weights" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k in KINDS or k in known}
    if key == "exclude" and isinstance(value, list):
        return [v for v in value if v in known]
    return value


def _did_you_mean(word: str, known: Any) -> str:
    """`; did you mean 'ignoreip'?` for a misspelt key, or nothing."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


_SETTINGS_KEYS = set(SETTINGS_FIELDS)


def _settings(src: dict[str, tuple[Any, TomlDoc]], errors: list[ConfigError]) -> Settings:
    values: dict[str, Any] = {}
    for key, (value, doc) in src.items():
        try:
            _setting(key, value, doc, values)
        except ConfigError as exc:
            errors.append(exc)
    return Settings(**values)


def _setting(key: str, value: Any, doc: TomlDoc, values: dict[str, Any]) -> None:
    """Validate one [mailban] key into `values` (settings_fields.SETTINGS_FIELDS); raises
    ConfigError."""
    where = ("mailban", key)
    read = SETTINGS_FIELDS.get(key)
    if read is None:
        raise doc.error(where, f"unknown setting {key!r}{_did_you_mean(key, _SETTINGS_KEYS)}; "
                               f"known: {', '.join(sorted(_SETTINGS_KEYS))}")
    try:
        values[key] = read(value)
    except ValueError as exc:
        raise doc.error(where, str(exc)) from None


_CLUSTER_KEYS = {"url", "password", "password_file", "node", "prefix", "stream_maxlen", "timeout",
                 "heartbeat", "tls_ca"}
# Node names and key prefixes end up inside Redis key names and stream entries: plain text only.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PREFIX = re.compile(r"[A-Za-z0-9{}._:-]{1,64}")


def _cluster(src: dict[str, tuple[Any, TomlDoc]]) -> ClusterSettings | None:
    """The `[cluster]` table, or None when there is none (a node on its own)."""
    if not src:
        return None
    values: dict[str, Any] = {}
    for key, (value, doc) in src.items():
        where = ("cluster", key)
        if key not in _CLUSTER_KEYS:
            raise doc.error(where, f"unknown cluster setting {key!r}{_did_you_mean(key, _CLUSTER_KEYS)}; "
                                   f"known: {', '.join(sorted(_CLUSTER_KEYS))}")
        if key == "url":
            if not isinstance(value, str) or not re.match(r"(rediss?|unix)://", value):
                raise doc.error(where, "`url` must be a redis://, rediss:// (TLS) or unix:// URL")
        elif key == "password":
            if not isinstance(value, str):
                raise doc.error(where, "`password` must be a string")
        elif key in ("password_file", "tls_ca"):
            if not isinstance(value, str) or (value and not value.startswith("/")):
                raise doc.error(where, f"`{key}` must be an absolute path")
        elif key == "node":
            if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
                raise doc.error(where, "`node` must be a plain name (letters, digits, '.', '_', '-'; at most 63)")
        elif key == "prefix":
            if not isinstance(value, str) or not _PREFIX.fullmatch(value):
                raise doc.error(where, "`prefix` must be a plain key prefix (letters, digits, '.', '_', ':', '-', '{}')")
        elif key == "stream_maxlen":
            if not isinstance(value, int) or isinstance(value, bool) or value < 100:
                raise doc.error(where, "`stream_maxlen` must be a whole number of at least 100")
        elif key in ("timeout", "heartbeat"):
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise doc.error(where, str(exc)) from None
            if not 0 < value <= 300:
                raise doc.error(where, f"`{key}` must be longer than zero and at most 5 minutes")
        values[key] = value
    if "url" not in values:
        doc = next(iter(src.values()))[1]
        raise doc.error(("cluster",), "[cluster] needs a `url` (e.g. \"rediss://redis.example.net:6380/0\")")
    if values.get("tls_ca") and not values["url"].startswith("rediss://"):
        # Else the admin believes the link is TLS while it is plain TCP, password included.
        raise src["tls_ca"][1].error(("cluster", "tls_ca"), "`tls_ca` needs a rediss:// (TLS) `url`")
    return ClusterSettings(**values)


_JAIL_KEYS = set(JAIL_FIELDS)


def _jail(
    name: str,
    src: dict[str, tuple[Any, TomlDoc]],
    filter_names: set[str],
    rule_names: set[str],
    actions: dict[str, ActionDef],
    errors: list[ConfigError],
) -> JailSpec | None:
    """The jail's spec, or None with its errors appended to `errors` (each key read by its field
    in jail_fields.JAIL_FIELDS)."""
    values: dict[str, Any] = {"name": name, "kinds": frozenset()}
    names = Names(frozenset(filter_names), frozenset(rule_names), frozenset(actions))
    failed = len(errors)
    for key, (value, doc) in src.items():
        where = ("jail", name, key)
        read = JAIL_FIELDS.get(key)
        if read is None:
            errors.append(doc.error(where, f"unknown jail setting {key!r}{_did_you_mean(key, _JAIL_KEYS)}; "
                                           f"known: {', '.join(sorted(_JAIL_KEYS))}"))
            continue
        try:
            values[key] = read(value, names)
        except ValueError as exc:
            errors.append(doc.error(where, str(exc)))
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) > failed:
        return None
    try:
        return _checked_jail(name, src, values)
    except ConfigError as exc:
        errors.append(exc)
        return None


def _checked_jail(name: str, src: dict[str, tuple[Any, TomlDoc]], values: dict[str, Any]) -> JailSpec:
    """The spec of a jail whose keys are each valid, checked as a whole."""
    if not values["kinds"] and not values.get("filters") and not values.get("rules") and not values.get("inline"):
        doc = next(iter(src.values()))[1] if src else None
        if doc is not None:
            raise doc.error(("jail", name), f"jail {name!r} selects nothing: give `kinds`, `filters` or `rules`")
    spec = JailSpec(**values)
    if (spec.ban_ips or spec.min_ips) and spec.key == "ip":
        doc = next(iter(src.values()))[1]
        raise doc.error(("jail", name, "key"), "`ban_ips` and `min_ips` need a jail keyed by user, uid or sender")
    if spec.inline and (spec.key == "uid" or spec.ban_ips):
        doc = next(iter(src.values()))[1]
        raise doc.error(("jail", name, "inline"), "an inline jail counts policy requests per user, sender or ip "
                                                  "(postfix sends no uid), without `ban_ips`")
    if spec.key != "ip" and "prefix6" not in src and "prefix4" not in src:
        spec = replace(spec, prefix6=0, prefix4=0)  # prefixes are for ip jails
    if spec.count == "recipients" and spec.kinds and not spec.kinds & {"queued", "submission"}:
        doc = next(iter(src.values()))[1]
        raise doc.error(("jail", name, "count"), "`count = \"recipients\"` sums the recipients of `queued` events: select them with `kinds`")
    return spec


def _check_action(action: ActionDef) -> None:
    """Validate an action's options with its implementation (imported lazily: nft is heavy)."""
    from .actions import registry

    registry.validate(action)
