"""The daemon's control commands: status, list, explain, ban, unban, purge-held, reload.

Inputs: requests from the control socket (control.py has checked who asks and parsed the JSON;
`_peer` holds the caller's uid and pid). Outputs: JSON-able answers. The commands read the
running daemon (its pipeline, sources and counters) and act through its parts (the action runner,
the state writer, the fleet bridge), so a manual ban goes exactly the way of a decided one.
Security note: keys in requests are validated (addresses with ipaddress, uids as digits, names
without NUL bytes) before use; nothing reaches a shell.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from typing import TYPE_CHECKING

from .. import __version__
from ..core.durations import format_duration, parse_duration
from ..core.jails import ALWAYS_IGNORED
from ..core.records import Ban, normalize_ip

if TYPE_CHECKING:
    from .loop import Daemon


class ControlCommands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def handlers(self) -> dict[str, Any]:
        """Command name -> handler, for control.ControlServer."""
        return {
            "status": lambda req: self.daemon.fleet.status(self.status(req)),
            "list": self.list,
            "ban": self.ban,
            "unban": self.unban,
            "purge-held": self.purge,
            "explain": self.explain,
            "reload": lambda _req: {"message": self.daemon.reload()},
        }

    def status(self, _req: dict[str, Any]) -> dict[str, Any]:
        d, now = self.daemon, time.time()
        bans = d.writer.active(now)
        jails = []
        for jail in d.pipeline.jails:
            spec = jail.spec
            # Windows count log timestamps; a followed log's lines are stamped about now.
            counts = jail.counts(now)
            top = sorted(((k, c) for k, c in counts.items() if c), key=lambda kv: -kv[1])[:10]
            jails.append({
                "name": spec.name, "key": spec.key, "findtime": spec.findtime, "maxretry": spec.maxretry,
                "count": spec.count,
                "bantime": spec.bantime, "actions": list(spec.actions), "tracked": jail.tracked,
                "suppressed": d.suppressed.get(spec.name, 0), "stale": d.inputs.stale.get(spec.name, 0),
                "banned": sum(1 for b in bans if b.jail == spec.name), "top": top,
            })
        return {
            "version": __version__,
            "started": d.started,
            "config": d.config.path,
            "sources": [d.inputs.status(name) for name in d.inputs.sources],
            "jails": jails,
            "bans": [self._ban_dict(b, now) for b in bans],
            "actions": d.runner.status({n: a.type for n, a in d.config.actions.items()}),
            "errors": d.errors[-10:],
            **({"direct_smtp": d.inputs.direct_smtp_status()} if d.inputs.direct_smtp is not None else {}),
            "state": d.writer.status(),
        }

    def _ban_dict(self, ban: Ban, now: float) -> dict[str, Any]:
        return {
            "jail": ban.jail, "key_type": ban.key_type, "key": ban.key, "time": ban.time,
            "until": ban.until, "left": ban.until - now, "count": ban.count, "findtime": ban.findtime,
            "actions": list(ban.actions), "lines": list(ban.lines), "manual": ban.manual,
            "ips": list(ban.ips), "cause": ban.cause, "repeat": ban.repeat, "observe": ban.observe,
            # what an action did not do in full when it acted on this key (sasl-disable's reload)
            "problems": dict(self.daemon.runner.problems.get((ban.key_type, ban.key), {})),
        }

    def list(self, _req: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        return {"bans": [self._ban_dict(b, now) for b in self.daemon.writer.state.active(now)]}

    @staticmethod
    def _target(req: dict[str, Any]) -> tuple[str, str]:
        """The (key_type, key) a ban/unban request names, validated."""
        key_type = str(req.get("key_type") or "ip")
        raw = req.get("key", req.get("ip"))
        if key_type in ("ip", "net") and "/" in str(raw or ""):
            try:
                return "net", str(ipaddress.ip_network(str(raw), strict=False))
            except ValueError:
                raise ValueError(f"not a network: {raw!r}") from None
        if key_type == "ip":
            ip = normalize_ip(str(raw or ""))
            if ip is None:
                raise ValueError(f"not an IP address: {raw!r}")
            return "ip", ip
        if key_type == "uid":
            if not str(raw).isdigit():
                raise ValueError(f"not a numeric uid: {raw!r}")
            return "uid", str(int(str(raw)))
        if key_type in ("user", "sender"):
            if not isinstance(raw, str) or not raw or len(raw) > 512 or "\0" in raw:
                raise ValueError(f"not a {key_type}: {raw!r}")
            return key_type, raw
        raise ValueError(f"unknown key type {key_type!r}: ip, user, uid or sender")

    def ban(self, req: dict[str, Any]) -> dict[str, Any]:
        d, w = self.daemon, self.daemon.writer
        key_type, key = self._target(req)
        seconds = parse_duration(req.get("for", "1h"))
        if seconds <= 0:
            raise ValueError("the ban duration must be longer than zero")
        jail_name = str(req.get("jail") or "manual")
        jail = d.pipeline.jail(jail_name)
        if jail is None and jail_name != "manual":
            known = ", ".join(j.spec.name for j in d.pipeline.jails)
            raise ValueError(f"there is no jail {jail_name!r}; the jails are: {known} (or \"manual\")")
        if key_type in ("ip", "net") and not req.get("force"):
            why = self._never_banned(key_type, key, jail)
            if why:
                raise ValueError(f"refused: {key} {why}, which mailban never bans; give --force if you "
                                 f"really mean it")
        if jail is None and key_type not in ("ip", "net"):
            # What an admin means by `ban --user`: the outbound jail's actions (hold the mail,
            # disable the account), not those of a jail that only watches guessing.
            keyed = [j for j in d.pipeline.jails if j.spec.key == key_type and j.spec.enabled]
            jail = next((j for j in keyed if "submission" in j.spec.kinds), keyed[0] if keyed else None)
            if jail is None:
                raise ValueError(f"no jail counts per {key_type}: give --jail, or configure one")
        if key_type == "ip":
            actions = jail.spec.actions if jail and jail.spec.key == "ip" else tuple(a for a in ("nft",) if a in d.runner)
        else:
            actions = jail.spec.actions
        if not actions:
            raise ValueError("no action is configured to carry out a manual ban")
        now = time.time()
        ban = Ban(jail=jail_name, key_type=key_type, key=key, time=now, until=now + seconds, count=0,
                  findtime=0.0, actions=tuple(actions), manual=True)
        d.pipeline.note_ban(ban)
        w.unsaved_windows.update((j.spec.name, "key", key) for j in d.pipeline.jails if j.spec.key == key_type)
        d.runner.apply([ban])
        d.fleet.publish([ban])
        if not w.commit(d.pipeline, [ban]):
            raise ValueError(f"banned {key_type} {key} in the actions, but the database failed "
                             f"({w.error}); it is kept in memory and committed when it works again")
        d.notify_status()
        label = key if key_type in ("ip", "net") else f"{key_type} {key}"
        chosen = f", the actions of jail {jail.spec.name}" if jail is not None and jail.spec.name != jail_name else ""
        return {"message": f"banned {label} for {format_duration(seconds)} via {', '.join(actions)} "
                           f"(jail {jail_name}{chosen})"}

    def _never_banned(self, key_type: str, key: str, jail: Any) -> str | None:
        """Why the automatic path would never ban this address or network, or None: loopback,
        the host's own addresses, postfix's mynetworks, `ignoreip` (global or the jail's)."""
        d = self.daemon
        target = ipaddress.ip_network(key, strict=False)
        labelled: list[tuple[Any, str]] = [(n, "loopback") for n in ALWAYS_IGNORED]
        labelled += [(n, "in `ignoreip`") for n in d.config.settings.ignoreip]
        labelled += list(d.protected)
        if jail is not None:
            labelled += [(n, f"in jail {jail.spec.name}'s `ignoreip`") for n in jail.spec.ignoreip]
        for net, why in labelled:
            if net.version == target.version and target.overlaps(net):
                return f"is {why}" if target.subnet_of(net) else f"holds {net} ({why})"  # type: ignore[arg-type]
        return None

    def explain(self, req: dict[str, Any]) -> dict[str, Any]:
        """Every decision on a key, its cause and lines, what the actions did, how to undo."""
        d, w = self.daemon, self.daemon.writer
        key_type, key = self._target(req)
        now = time.time()
        active = [self._ban_dict(b, now) for b in w.state.active_on({(key_type, key)}, now)]
        counting = []
        for jail in d.pipeline.jails:
            count = jail.count_of(key, now) if jail.spec.key == key_type else None
            if count is not None:
                counting.append({"jail": jail.spec.name, "count": count,
                                 "maxretry": jail.spec.maxretry, "findtime": jail.spec.findtime})
        held = d.runner.held_for(key_type, key)
        never = self._never_banned(key_type, key, None) if key_type in ("ip", "net") else None
        direct = None
        if key_type == "uid" and d.inputs.direct_smtp is not None:
            direct = d.inputs.direct_smtp.summary()["uids"].get(key)
        return {"key_type": key_type, "key": key, "active": active, "history": w.state.history(key_type, key),
                "counting": counting, "held": held, "never_banned": never,
                **({"direct_smtp": direct} if direct is not None else {})}

    def purge(self, req: dict[str, Any]) -> dict[str, Any]:
        key_type, key = self._target(req)
        purged = self.daemon.runner.purge(key_type, key)
        return {"message": f"deleted {purged} held messages of {key_type} {key}"}

    def unban(self, req: dict[str, Any]) -> dict[str, Any]:
        d, w = self.daemon, self.daemon.writer
        if req.get("all"):
            removed = w.state.remove()
            w.state.drop_windows()
            w.drop_unsaved()
            d.pipeline.forget_all()
            d.runner.unban_all(removed)
            d.fleet.unbanned(req, None, None)
            d.notify_status()
            return {"message": f"lifted {len(removed)} bans"}
        key_type, key = self._target(req)
        removed = w.state.remove(key_type, key)
        if key_type == "net":
            # An unbanned network also frees the addresses banned one by one inside it.
            net = ipaddress.ip_network(key)
            for ban in w.state.active(time.time()):
                if ban.key_type == "ip" and ipaddress.ip_address(ban.key) in net:
                    removed += w.state.remove("ip", ban.key)
        lifted = {(b.key_type, b.key) for b in removed} | {(key_type, key)}
        d.runner.lifted(lifted)
        w.drop_unsaved(lifted)
        # Counting starts afresh only in the jails whose ban is lifted: an unban by mail-abuse
        # must not reset what slow-guess has counted for the same address.
        for ban in removed:
            d.pipeline.forget(ban.key_type, ban.key, ban.jail)
            w.unsaved_windows.add((ban.jail, "net" if ban.key_type == "net" else "key", ban.key))
        w.commit(d.pipeline)
        peer = req.get("_peer") or {}
        w.record([(time.time(), "unban", b.jail, b.key_type, b.key, {"by_uid": peer.get("uid"), "by_pid": peer.get("pid")})
                  for b in removed or [Ban(jail="-", key_type=key_type, key=key, time=0, until=0, count=0,
                                           findtime=0, actions=())]])
        # Undo in every action even when the database had no ban (a left-over kernel element, a
        # map entry added by hand): every action's undo is idempotent.
        stub = Ban(jail="manual", key_type=key_type, key=key, time=0, until=0, count=0, findtime=0,
                   actions=d.runner.names())
        d.runner.unapply(removed + [stub])
        d.fleet.unbanned(req, key_type, key)
        d.notify_status()
        label = key if key_type in ("ip", "net") else f"{key_type} {key}"
        if not removed:
            raise ValueError(f"nothing to lift: {label} has no ban (anything left of one in the actions was "
                             f"removed all the same)")
        inside = [b for b in removed if (b.key_type, b.key) != (key_type, key)]
        bans_inside = f"{len(inside)} address ban{'s' if len(inside) != 1 else ''}"
        undone = sorted({a for b in removed for a in b.actions if a in d.runner})
        jails = sorted({b.jail for b in removed})
        what = (f"lifted {bans_inside} inside {label}" if len(inside) == len(removed) else
                f"unbanned {label}" + (f" and {bans_inside} inside it" if inside else ""))
        return {"message": f"{what} (jail{'s' if len(jails) > 1 else ''} {', '.join(jails)}); "
                           f"undone: {', '.join(undone) or 'nothing'}"}
