"""Text rendering of the daemon's status and ban list for people (JSON is for scripts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.durations import format_duration as _d


def _n(count: int, word: str, plural: str | None = None) -> str:
    """`1 event`, `2 events`."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _shown(text: str) -> str:
    """Log text is attacker text: escape control characters before it reaches a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render_status(st: dict[str, Any], jail_name: str | None = None) -> str:
    """The daemon's status; with `jail_name`, that jail's part (fail2ban's `status JAIL`)."""
    if jail_name is not None:
        return "\n".join(_render_jail(j) for j in st["jails"] if j["name"] == jail_name)
    out = [f"mailban {st['version']}, up since {_when(st['started'])}, config {st['config']}"]
    for src in st["sources"]:
        if src["path"] == "journal":
            state = "reading" if src["exists"] else f"FAILING: {src.get('error')}"
            out.append(f"  systemd journal: {state}, {src['lines']} lines read, "
                       f"{src.get('forged', 0)} entries refused (not written by the program they name)")
            continue
        state = "reading" if src["exists"] else "waiting for the file to appear"
        total = f" ({src['total']} since first followed)" if src.get("total", src["lines"]) != src["lines"] else ""
        out.append(f"  log {src['path']}: {state}, {src['lines']} lines read{total}")
    out.append("")
    for jail in st["jails"]:
        out.append(_render_jail(jail))
    out.append("")
    out.append(f"active bans: {len(st['bans'])}")
    for action in st["actions"]:
        health = (f"FAILING: {action['error']}" if action["error"] else
                  f"WARNING: {action['warning']}" if action.get("warning") else
                  f"idle (started when a decision needs it): {action['idle']}" if action.get("idle") else "ok")
        if action.get("pending"):
            health += f" ({action['pending']} bans/unbans owed, retried with backoff)"
        out.append(f"action {action['name']} ({action['type']}): {health}")
    db = st.get("state") or {}
    if db.get("error"):
        out.append(f"database FAILING: {db['error']} ({db.get('unsaved_bans', 0)} bans applied and kept in "
                   "memory, committed when it works again)")
    for err in st.get("errors", []):
        out.append(f"error: {err}")
    if st.get("direct_smtp") is not None:
        out.append("")
        out.extend(render_direct_smtp(st["direct_smtp"]))
    if st.get("cluster"):
        out.append("")
        out.extend(render_cluster(st["cluster"]))
    return "\n".join(out)


def _render_jail(jail: dict[str, Any]) -> str:
    unit = {"score": "point", "recipients": "recipient"}.get(jail.get("count", "events"), "event")
    out = [f"jail {jail['name']}: {_n(jail['maxretry'], unit)} per {jail.get('key', 'ip')} in "
           f"{_d(jail['findtime'])} -> ban for {_d(jail['bantime'])} via {', '.join(jail['actions'])}; "
           f"{_n(jail['tracked'], 'key')} counting, {jail['banned']} banned"]
    if jail.get("stale"):
        out.append(f"    {_n(jail['stale'], 'event')} not counted: their lines were older than the find time "
                   "when read")
    if jail.get("suppressed"):
        out.append(f"    SAFETY VALVE: {_n(jail['suppressed'], 'decision')} held back (too many per minute)")
    for key, count in jail["top"]:
        out.append(f"    {count:>4}  {_shown(key)}")
    return "\n".join(out)


def render_direct_smtp(ds: dict[str, Any]) -> list[str]:
    """Direct outbound SMTP per uid (status, `mailban direct-smtp`): what the kernel counted."""
    state = f"FAILING: {ds['error']}" if ds.get("error") else "counting"
    policy = ("every uid but the MTA's refused" if ds.get("policy") == "all-but-mta"
              else "uids blocked one by one by the direct-smtp-block action")
    out = [f"direct SMTP (ports {', '.join(map(str, ds.get('ports', [])))}): {state}; {policy}; "
           f"not counted: uids {', '.join(map(str, ds.get('excluded_uids', []))) or 'none'}"
           + (f" (no such users here: {', '.join(ds['missing_users'])})" if ds.get("missing_users") else "")]
    blocked = ds.get("blocked") or {}
    uids = ds.get("uids") or {}
    if not uids:
        out.append("  no direct connection counted")
    for uid, info in sorted(uids.items(), key=lambda kv: -kv[1]["connections"]):
        mark = ""
        if uid in blocked:
            left = blocked[uid]
            mark = f"  BLOCKED ({_left(left)} left)" if left is not None else "  BLOCKED"
        out.append(f"  uid {uid} ({_shown(info['user'])}): {_n(info['connections'], 'connection')}{mark}")
        dests = ", ".join(f"{d} x{n}" for d, n in list(info["destinations"].items())[:8])
        out.append(f"    to {dests}")
        for proc in info.get("processes", []):
            out.append(f"    pid {proc['pid']} in {_shown(proc['cwd'])}: {_shown(proc['cmdline'])}")
    return out


def render_cluster(cl: dict[str, Any]) -> list[str]:
    """The fleet view: this node, Redis health, the nodes seen and their lag, shared bans."""
    state = "connected" if cl["connected"] else f"DOWN since {_when(cl['error_since'])}: {cl['error']}" \
        if cl.get("error") else "connecting"
    out = [f"cluster: node {cl['node']}, Redis {cl['url']} {state}"]
    if cl.get("outbox"):
        out.append(f"  {cl['outbox']} decisions of this node waiting to be published")
    if cl.get("events_waiting"):
        out.append(f"  {cl['events_waiting']} counted events waiting to be shared")
    out.append(f"  stream: {cl['stream']['length']} decisions, last {cl['stream']['last_id']}; "
               f"applied here up to {cl['applied']}")
    out.append(f"  nodes seen: {len(cl['nodes'])}")
    for node in cl["nodes"]:
        out.append(f"    {node['node']:<20} seen {node['seen']:>5.1f}s ago, lag {node['lag']:.3f}s, "
                   f"mailban {node['version']}")
    shared = cl.get("shared_bans", [])
    out.append(f"  shared bans: {len(shared)}")
    for ban in shared[:20]:
        out.append(f"    {_shown(ban['key'])} ({ban['jail']}, {_left(ban['left'])} left): {_shown(ban['cause'])}")
    return out


def render_list(bans: list[dict[str, Any]]) -> str:
    if not bans:
        return "no active bans"
    out = []
    for ban in bans:
        out.append(
            f"{ban['key_type']} {_shown(ban['key'])}  jail {ban['jail']}  until {_when(ban['until'])} "
            f"({_left(ban['left'])} left)  {'manual' if ban['manual'] else _n(ban['count'], 'event')}"
            + (f"  via {', '.join(ban['actions'])}" if ban["actions"] else "")
            + ("  [observe mode: not acted on]" if ban.get("observe") else "")
            + (f"  (repeat offender: {ban['repeat']} earlier)" if ban.get("repeat") else "")
        )
        if ban.get("cause"):
            out.append(f"    because of {_shown(ban['cause'])}")
        for action, problem in sorted((ban.get("problems") or {}).items()):
            out.append(f"    action {action}: {_shown(problem)}")
        if ban.get("ips"):
            shown = ", ".join(ban["ips"][:20]) + (f" and {len(ban['ips']) - 20} more" if len(ban["ips"]) > 20 else "")
            out.append(f"    from {_n(len(ban['ips']), 'address', 'addresses')}: {shown}")
        for line in ban["lines"]:
            out.append(f"    {_shown(line)}")
    return "\n".join(out)


_FLAG = {"ip": "", "net": "", "user": "--user ", "uid": "--uid ", "sender": "--sender "}


def render_explain(ex: dict[str, Any]) -> str:
    """`mailban explain`: every decision on one key, oldest first, and how to undo what holds."""
    import shlex

    label = f"{ex['key_type']} {_shown(ex['key'])}"
    out = [f"{label}:"]
    if ex.get("never_banned"):
        out.append(f"  never banned: it {ex['never_banned']} (mailban counts nothing for it)")
    if not ex["history"] and not ex["active"] and not ex["counting"]:
        out.append("  mailban has no record of it.")
    for row in ex["history"]:
        when = _when(row["time"])
        if row["what"] == "ban":
            if row.get("manual"):
                out.append(f"  {when}  banned by hand in jail {row['jail']} until {_when(row['until'])}")
            else:
                acts = "observe mode: not acted on" if row.get("observe") else f"via {', '.join(row['actions'])}"
                out.append(f"  {when}  jail {row['jail']} decided: {_n(row['count'], 'event')} within "
                           f"{_d(row['findtime'])}; until {_when(row['until'])}, {acts}"
                           + (f"; repeat offender ({row['repeat']} earlier)" if row.get("repeat") else ""))
            if row.get("cause"):
                out.append(f"      because of {_shown(row['cause'])}")
            if row.get("ips"):
                out.append(f"      from {_n(len(row['ips']), 'address', 'addresses')}: {', '.join(row['ips'][:20])}")
            for line in row.get("lines", []):
                out.append(f"      | {_shown(line)}")
        elif row["what"] == "action":
            note = f" ({_shown(row['note'])})" if row.get("note") else ""
            out.append(f"  {when}  action {row['action']}: {_shown(row['result'])}{note}")
        elif row["what"] == "unban":
            who = f" by uid {row['by_uid']}" if row.get("by_uid") is not None else ""
            out.append(f"  {when}  unbanned{who}")
        elif row["what"] == "remote-unban":
            out.append(f"  {when}  (that unban came from node {_shown(row['node'])})")
        elif row["what"] == "expire":
            out.append(f"  {when}  the ban of jail {row['jail']} expired")
        elif row["what"] == "folded":
            out.append(f"  {when}  folded into the prefix ban {row['into']}")
        elif row["what"] == "suppressed":
            out.append(f"  {when}  NOT acted on: {row['reason']}")
    for c in ex["counting"]:
        out.append(f"  now counting in jail {c['jail']}: {c['count']} of {c['maxretry']} within {_d(c['findtime'])}")
    if ex.get("direct_smtp"):
        info = ex["direct_smtp"]
        out.append(f"  direct SMTP counted by the kernel: {_n(info['connections'], 'connection')} to "
                   + ", ".join(f"{d} x{n}" for d, n in list(info["destinations"].items())[:8]))
        for proc in info.get("processes", []):
            out.append(f"    pid {proc['pid']} in {_shown(proc['cwd'])}: {_shown(proc['cmdline'])}")
    if ex.get("held"):
        out.append(f"  mail on hold: {', '.join(ex['held'])}")
    if ex["active"]:
        left = max(b["left"] for b in ex["active"])
        out.append(f"  banned now, {_left(left)} left. Undo: mailban unban {_FLAG[ex['key_type']]}{_shown(shlex.quote(ex['key']))}")
    else:
        out.append("  not banned now.")
    return "\n".join(out)
