"""The `mailban` command: run the daemon, test filters, replay logs, and control the daemon.

Imports are deferred to the subcommand that needs them, so that `mailban status` stays quick.
Size: one argparse definition (the source of the man page's checked option list) and one short
function per command; the commands' work is elsewhere (offline/, daemon/, render.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import __version__

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="configuration file (default /etc/mailban/mailban.toml, "
                   "or the shipped default when it does not exist)")


def _add_socket(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default: from the configuration)")


def _add_target(p: argparse.ArgumentParser, ip: bool = True, several: bool = False) -> Any:
    target = p.add_mutually_exclusive_group(required=True)
    if ip:
        if several:
            target.add_argument("ip", nargs="*", default=[], help="client addresses or networks")
        else:
            target.add_argument("ip", nargs="?", help="client address")
    target.add_argument("--user", metavar="USER", help="SASL user name")
    target.add_argument("--uid", metavar="N", help="local uid (mail through sendmail(1)/pickup)")
    target.add_argument("--sender", metavar="ADDRESS", help="envelope sender")
    return target


def _target(args: argparse.Namespace) -> dict[str, Any]:
    for key_type in ("user", "uid", "sender"):
        value = getattr(args, key_type, None)
        if value is not None:
            return {"key_type": key_type, "key": value}
    return {"key_type": "ip", "key": args.ip}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailban", description="Ban abusive mail clients from their log lines.")
    parser.add_argument("--version", action="version", version=f"mailban {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    _add_config(p)

    p = sub.add_parser("test", help="run filters over a log and summarise what they match")
    p.add_argument("log", help="log file, or - for standard input")
    p.add_argument("filters", nargs="*", metavar="FILTER", help="filter names or .toml files (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event")
    p.add_argument("--missed", action="store_true",
                   help="instead, the lines of the programs the filters cover that no rule matched, grouped by shape")
    p.add_argument("--jobs", type=int, metavar="N", default=None,
                   help="worker processes for the summary of a large file (default: one per CPU)")
    _add_config(p)

    p = sub.add_parser("replay", help="push logs through the whole pipeline and print the decisions (no action)")
    p.add_argument("logs", nargs="+", metavar="LOG")
    p.add_argument("--json", action="store_true", help="print one JSON object per decision")
    p.add_argument("--report", action="store_true",
                   help="instead: what each jail's thresholds would do (peaks per key, keys acted on per threshold)")
    p.add_argument("--html", metavar="FILE", help="with --report: also write an HTML page with plots")
    _add_config(p)

    p = sub.add_parser("check", help="validate the configuration, filters and actions")
    p.add_argument("--json", action="store_true", help="the checked configuration as JSON (errors too)")
    _add_config(p)

    for name, text in (("status", "show jails, counts, bans and action errors"), ("list", "list bans and their causes")):
        p = sub.add_parser(name, help=text)
        if name == "status":
            p.add_argument("jail", nargs="?", help="only this jail (its counts, top keys and bans)")
        p.add_argument("--json", action="store_true")
        _add_socket(p)

    p = sub.add_parser("ban", help="ban an address (or act on an account) by hand")
    _add_target(p)
    p.add_argument("--jail", default="manual", help="jail to record the ban under (default: manual; "
                   "for --user/--uid/--sender the jail's actions are used)")
    p.add_argument("--for", dest="duration", default="1h", metavar="DURATION", help="e.g. 30m, 1h, 2d (default 1h)")
    p.add_argument("--force", action="store_true",
                   help="ban even loopback, this host's own addresses, mynetworks or an ignored address")
    _add_socket(p)

    p = sub.add_parser("unban", help="lift a ban: release an address, re-enable an account, release its mail")
    target = _add_target(p, several=True)
    target.add_argument("--all", action="store_true", help="lift every ban")
    _add_socket(p)

    p = sub.add_parser("explain", help="why a key was acted on: decisions, counts, lines, action results, undo")
    _add_target(p)
    p.add_argument("--json", action="store_true")
    _add_socket(p)

    p = sub.add_parser("purge-held", help="delete (instead of releasing) the mail held for an account")
    _add_target(p, ip=False)
    _add_socket(p)

    p = sub.add_parser("reload", help="reload the configuration (the old one stays if the new one is bad)")
    _add_socket(p)

    p = sub.add_parser("direct-smtp", help="direct outbound SMTP per local uid, as the kernel counts it now "
                                           "(with the processes holding such sockets); no daemon needed")
    p.add_argument("--json", action="store_true")
    _add_config(p)

    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def _config_error(exc: Exception) -> int:
    errors = getattr(exc, "errors", [exc])
    if len(errors) == 1:
        print(f"mailban: configuration refused: {exc}", file=sys.stderr)
    else:
        print(f"mailban: configuration refused, {len(errors)} errors:", file=sys.stderr)
        for error in errors:
            print(f"  {error.path}:{error.line}:{error.column}: {error.message}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..daemon import Daemon

    try:
        daemon = Daemon(args.config)
    except ConfigError as exc:
        return _config_error(exc)
    return daemon.run()


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush of it
    does not fail again."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_test(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import config
    from ..core.errors import ConfigError
    from ..offline import run_test

    confdir = Path(args.config).parent if args.config else Path(config.DEFAULT_CONFIG).parent
    try:
        filters = config.load_filters(confdir, args.filters or None)
    except ConfigError as exc:
        return _config_error(exc)
    try:
        if args.jobs is not None and args.jobs < 1:
            print("mailban: --jobs must be at least 1", file=sys.stderr)
            return 2
        if args.missed:
            import time

            from ..offline.missed import collect, write_missed

            write_missed(collect([args.log], filters, time.time()), args.json, sys.stdout)
            return 0
        return run_test([args.log], filters, args.json, jobs=args.jobs)
    except BrokenPipeError:  # `mailban test LOG | head`: the reader has seen enough
        _quiet_stdout()
        return 0
    except OSError as exc:
        print(f"mailban: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
        return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from .. import config
    from ..core.errors import ConfigError
    from ..offline import run_replay

    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        return _config_error(exc)
    if args.report or args.html:
        from ..offline import report

        try:
            reports = report.build(cfg, report.events_from(cfg, args.logs))
        except OSError as exc:
            print(f"mailban: cannot read a log: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps([{"jail": r.spec.name, "key": r.spec.key, "maxretry": r.spec.maxretry,
                               "keys": len(r.peaks), "thresholds": r.thresholds(), "peaks": r.histogram(),
                               "top": r.top(), "near_misses": r.near_misses(),
                               "busiest_under": r.busiest_under() if r.spec.key != "ip" else []}
                              for r in reports], indent=2))
        else:
            report.render_text(reports, sys.stdout)
        if args.html:
            with open(args.html, "w", encoding="utf-8") as fh:
                report.render_html(reports, fh)
            print(f"HTML report written to {args.html}", file=sys.stderr)
        return 0
    try:
        return run_replay(args.logs, cfg, args.json)
    except OSError as exc:
        print(f"mailban: cannot read a log: {exc}", file=sys.stderr)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    from .. import config
    from ..core.errors import ConfigError
    from ..jail_fields import shown
    from ..settings_fields import shown as shown_settings
    from ..speedups import describe, speedups

    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": exc.path, "line": exc.line, "column": exc.column,
                              "error": exc.message}))
            return EXIT_CONFIG
        return _config_error(exc)
    if args.json:
        print(json.dumps({
            "ok": True, "config": cfg.path, "files": list(cfg.files),
            "settings": shown_settings(cfg.settings),
            "filters": [{"name": f.name, "path": f.path, "rules": [r.id for r in f.rules]} for f in cfg.filters],
            "actions": {n: {"type": a.type, "path": a.path} for n, a in sorted(cfg.actions.items())},
            "jails": [{"name": j.name, **shown(j), "rule": j.describe()} for j in cfg.jails],
            "speedups": speedups() is not None,
            "warnings": _action_config_warnings(cfg),
            "mta": _mta_summary(cfg),
        }, indent=2))
        return 0
    shipped = str(config.SHIPPED_DEFAULT)
    on_top = "" if cfg.path == shipped else " (on top of the shipped defaults)"
    print(f"mailban {__version__}: configuration OK: {cfg.path}{on_top}")
    print(f"  files: {', '.join(cfg.files)}")
    print(f"  filters: {', '.join(f.name for f in cfg.filters)}")
    print(f"  actions: {', '.join(sorted(cfg.actions))}")
    print(f"  hot loops: {describe()}")
    mta = _mta_summary(cfg)
    if mta["followed_by"]:
        found = f"{mta['detected']}, detected" if mta["detected"] else "none detected, postfix assumed"
        print(f"  mta: {found} ({mta['evidence']}); followed by {', '.join(mta['followed_by'])}")
    for warning in _action_config_warnings(cfg):
        print(f"  warning: {warning}")
    if cfg.cluster is not None:
        from ..cluster import redacted

        shared = [j.name for j in cfg.jails if j.enabled and j.shared]
        print(f"  cluster: node {cfg.cluster.node}, Redis {redacted(cfg.cluster.url)}, key prefix "
              f"{cfg.cluster.prefix}; shared jails: {', '.join(shared) or 'none'}")
    _print_keys(cfg, ("mailban",), "  [mailban]")
    _print_keys(cfg, ("cluster",), "  [cluster]")
    for spec in cfg.jails:
        state = "enabled" if spec.enabled else "disabled"
        _print_keys(cfg, ("jail", spec.name), f"  jail {spec.name} ({state}): {spec.describe()}")
    return 0


def _mta_summary(cfg: Any) -> dict[str, Any]:
    """The MTA found on this host and the actions that follow it (`mta = "auto"`)."""
    from ..mta_detect import summary

    return summary({n: (a.type, a.options) for n, a in cfg.actions.items()})


def _action_config_warnings(cfg: Any) -> list[str]:
    """What the MTAs' configurations lack for the configured actions (check_config())."""
    from ..actions import registry
    from ..actions.base import ActionBase, ActionContext

    warnings = []
    for name, action in sorted(cfg.actions.items()):
        try:
            if registry.load(action.type).check_config is ActionBase.check_config:
                continue  # nothing to check: do not build it
            impl = registry.create(action, ActionContext(state_dir=cfg.settings.state_dir))
            warnings += [f"action {name}: {w}" for w in impl.check_config()]
        except ImportError:
            continue  # a missing dependency: the daemon says so when it builds the action
        except Exception as exc:  # a check must not fail the validation it reports on
            warnings.append(f"action {name}: cannot check the MTA's configuration: {exc}")
    return warnings


def _print_keys(cfg: Any, table: tuple[str, ...], title: str) -> None:
    """The effective keys of one table, each with where it was set (`mailban check`)."""
    keys = sorted((k[-1], value, where) for k, (value, where) in cfg.origins.items() if k[:-1] == table)
    if not keys and table[0] != "jail":  # a jail is shown even with no key of its own
        return
    print(title)
    for key, value, where in keys:
        text = f"{key} = {_toml_value(value)}"
        print(f"      {text:<60} # {where}")


def _toml_value(value: Any) -> str:
    """A value as TOML writes it (strings quoted, booleans lower case, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    # Read only the main file's [mailban].socket: loading every filter would slow `status` down.
    import os

    import tomli

    from ..config import DEFAULT_CONFIG, SHIPPED_DEFAULT, Settings

    path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else str(SHIPPED_DEFAULT))
    try:
        with open(path, "rb") as fh:
            value = tomli.load(fh).get("mailban", {}).get("socket")
    except (OSError, tomli.TOMLDecodeError):
        value = None
    return value if isinstance(value, str) else Settings.socket


def _call(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any] | int:
    """The daemon's answer, or the exit code of a failure already reported on stderr: 3 when
    the daemon cannot be reached, 2 when it refused a configuration, 1 for any other refusal."""
    from ..control import request

    path = _socket_path(args)
    try:
        answer = request(path, payload)
    except (OSError, ValueError) as exc:
        print(f"mailban: cannot reach the daemon at {path}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"mailban: {answer.get('error', 'request failed')}", file=sys.stderr)
        return EXIT_CONFIG if answer.get("config_refused") else 1
    return answer


def _show(args: argparse.Namespace, payload: dict[str, Any], renderer: str, part: str | None = None) -> int:
    """A read command: the daemon's answer as JSON, or rendered for people by render.<renderer>."""
    answer = _call(args, payload)
    if isinstance(answer, int):
        return answer
    answer.pop("ok", None)
    data = answer[part] if part else answer
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from . import render

    print(getattr(render, renderer)(data))
    return 0


def _do(args: argparse.Namespace, payload: dict[str, Any], done: str) -> int:
    """A command that changes something: the daemon's message, or its refusal on stderr."""
    answer = _call(args, payload)
    if isinstance(answer, int):
        return answer
    print(answer.get("message", done))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if not args.jail:
        return _show(args, {"cmd": "status"}, "render_status")
    answer = _call(args, {"cmd": "status"})
    if isinstance(answer, int):
        return answer
    jails = [j for j in answer["jails"] if j["name"] == args.jail]
    if not jails:
        print(f"mailban: there is no jail {args.jail!r}; the jails are: "
              f"{', '.join(j['name'] for j in answer['jails'])}", file=sys.stderr)
        return 1
    bans = [b for b in answer["bans"] if b["jail"] == args.jail]
    if args.json:
        print(json.dumps({**jails[0], "bans": bans}, indent=2))
        return 0
    from . import render

    print(render.render_status(answer, args.jail))
    if bans:
        print(render.render_list(bans))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return _show(args, {"cmd": "list"}, "render_list", part="bans")


def cmd_explain(args: argparse.Namespace) -> int:
    return _show(args, {"cmd": "explain", **_target(args)}, "render_explain")


def cmd_ban(args: argparse.Namespace) -> int:
    return _do(args, {"cmd": "ban", **_target(args), "jail": args.jail, "for": args.duration,
                      "force": bool(args.force)}, "banned")


def cmd_direct_smtp(args: argparse.Namespace) -> int:
    """`mailban test`'s counterpart for what no log shows: the kernel's counters, read directly."""
    from .. import config as config_mod
    from ..core.errors import ConfigError
    from ..directsmtp.report import snapshot
    from .render import render_direct_smtp

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        return _config_error(exc)
    try:
        snap = snapshot(cfg.settings)
    except Exception as exc:  # no nft table (never turned on), no CAP_NET_ADMIN
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("" if cfg.settings.direct_smtp else
                " (direct_smtp is off in this configuration: see docs/direct-smtp.md)")
        print(f"mailban direct-smtp: cannot read the counters: {first}{hint}", file=sys.stderr)
        return 1
    print(json.dumps(snap, indent=2) if args.json else "\n".join(render_direct_smtp(snap)))
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    if args.all:
        return _do(args, {"cmd": "unban", "all": True}, "unbanned")
    target = _target(args)
    if target["key_type"] != "ip":
        return _do(args, {"cmd": "unban", **target}, "unbanned")
    # several addresses or networks: one request each, every answer shown, non-zero if any failed
    rc = 0
    for ip in target["key"]:
        rc = max(rc, _do(args, {"cmd": "unban", "key_type": "ip", "key": ip}, "unbanned"))
    return rc


def cmd_purge_held(args: argparse.Namespace) -> int:
    return _do(args, {"cmd": "purge-held", **_target(args)}, "purged")


def cmd_reload(args: argparse.Namespace) -> int:
    return _do(args, {"cmd": "reload"}, "reloaded")


def cmd_completion(args: argparse.Namespace) -> int:
    from . import completion

    print(getattr(completion, args.shell)(build_parser()), end="")
    return 0


COMMANDS = {
    "run": cmd_run,
    "test": cmd_test,
    "replay": cmd_replay,
    "check": cmd_check,
    "status": cmd_status,
    "list": cmd_list,
    "ban": cmd_ban,
    "unban": cmd_unban,
    "direct-smtp": cmd_direct_smtp,
    "reload": cmd_reload,
    "purge-held": cmd_purge_held,
    "explain": cmd_explain,
    "completion": cmd_completion,
}
