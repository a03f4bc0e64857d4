"""The daemon's control commands: status, list, explain, ban, unban, purge-held, reload.

Inputs: requests from the control socket (control.py has checked who asks and parsed the JSON;
`_peer` holds the caller's uid and pid). Outputs: JSON-able answers. A mixin of the Daemon: the
handlers read the daemon's state (database, pipeline, actions) and act through its own methods
(_apply, _unapply, _record), so a manual ban goes exactly the way of a decided one.
Security note: keys in requests are validated (addresses with ipaddress, uids as digits, names
without NUL bytes) before use; nothing reaches a shell.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from . import __version__
from .core.durations import format_duration, parse_duration
from .core.jails import ALWAYS_IGNORED
from .core.records import Ban, normalize_ip


class ControlCommands:
    """Mixed into Daemon; uses its attributes (state, pipeline, actions, config, ...)."""

    # ---- control commands -------------------------------------------------------------------
    def _handlers(self) -> dict[str, Any]:
        return {
            "status": lambda req: self._cluster_status(self._cmd_status(req)),
            "list": self._cmd_list,
            "ban": self._cmd_ban,
            "unban": self._cmd_unban,
            "purge-held": self._cmd_purge,
            "explain": self._cmd_explain,
            "reload": lambda _req: {"message": self.reload()},
        }

    def _cmd_status(self, _req: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        bans = self.state.active(now) + [b for b in self.unsaved_bans if b.until > now]
        jails = []
        for jail in self.pipeline.jails:
            spec = jail.spec
            # Windows count log timestamps; a followed log's lines are stamped about now.
            counts = jail.counts(now)
            top = sorted(((k, c) for k, c in counts.items() if c), key=lambda kv: -kv[1])[:10]
            jails.append({
                "name": spec.name, "key": spec.key, "findtime": spec.findtime, "maxretry": spec.maxretry,
                "count": spec.count,
                "bantime": spec.bantime, "actions": list(spec.actions), "tracked": len(jail.windows),
                "suppressed": self.suppressed.get(spec.name, 0), "stale": self.stale.get(spec.name, 0),
                "banned": sum(1 for b in bans if b.jail == spec.name), "top": top,
            })
        return {
            "version": __version__,
            "started": self.started,
            "config": self.config.path,
            "sources": [self._source_dict(name, source) for name, source in self.sources.items()],
            "jails": jails,
            "bans": [self._ban_dict(b, now) for b in bans],
            "actions": [
                {"name": n, "type": self.config.actions[n].type,
                 # failing (a program failed; retried) apart from what the action reports
                 # about itself (not set up, done but not in full)
                 "error": s.error,
                 "warning": s.impl.health(),
                 "idle": s.idle,
                 "pending": len(s.pending_bans) + len(s.pending_unbans)}
                for n, s in self.actions.items()
            ],
            "errors": self.errors[-10:],
            **({"direct_smtp": {**self.direct_smtp.summary(), **self.direct_smtp.status(),
                                "blocked": self._direct_smtp_blocked()}}
               if self.direct_smtp is not None else {}),
            "state": {"path": self.state.path, "error": self.state_error, "unsaved_bans": len(self.unsaved_bans),
                      "unsaved_windows": len(self.unsaved_windows)},
        }

    def _source_dict(self, name: str, source: Any) -> dict[str, Any]:
        info = source.status()  # exists, and what the kind adds (journal: forged, error)
        return {"path": name, "exists": info.pop("exists"), "lines": self.lines_read.get(name, 0),
                "total": self.lines_total.get(name, 0), **info}

    def _ban_dict(self, ban: Ban, now: float) -> dict[str, Any]:
        return {
            "jail": ban.jail, "key_type": ban.key_type, "key": ban.key, "time": ban.time,
            "until": ban.until, "left": ban.until - now, "count": ban.count, "findtime": ban.findtime,
            "actions": list(ban.actions), "lines": list(ban.lines), "manual": ban.manual,
            "ips": list(ban.ips), "cause": ban.cause, "repeat": ban.repeat, "observe": ban.observe,
            # what an action did not do in full when it acted on this key (sasl-disable's reload)
            "problems": dict(self.action_problems.get((ban.key_type, ban.key), {})),
        }

    def _cmd_list(self, _req: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        return {"bans": [self._ban_dict(b, now) for b in self.state.active(now)]}

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

    def _cmd_ban(self, req: dict[str, Any]) -> dict[str, Any]:
        key_type, key = self._target(req)
        seconds = parse_duration(req.get("for", "1h"))
        if seconds <= 0:
            raise ValueError("the ban duration must be longer than zero")
        jail_name = str(req.get("jail") or "manual")
        jail = self.pipeline.jail(jail_name)
        if jail is None and jail_name != "manual":
            known = ", ".join(j.spec.name for j in self.pipeline.jails)
            raise ValueError(f"there is no jail {jail_name!r}; the jails are: {known} (or \"manual\")")
        if key_type in ("ip", "net") and not req.get("force"):
            why = self._never_banned(key_type, key, jail)
            if why:
                raise ValueError(f"refused: {key} {why}, which mailban never bans; give --force if you "
                                 f"really mean it")
        if jail is None and key_type not in ("ip", "net"):
            # What an admin means by `ban --user`: the outbound jail's actions (hold the mail,
            # disable the account), not those of a jail that only watches guessing.
            keyed = [j for j in self.pipeline.jails if j.spec.key == key_type and j.spec.enabled]
            jail = next((j for j in keyed if "submission" in j.spec.kinds), keyed[0] if keyed else None)
            if jail is None:
                raise ValueError(f"no jail counts per {key_type}: give --jail, or configure one")
        if key_type == "ip":
            actions = jail.spec.actions if jail and jail.spec.key == "ip" else tuple(a for a in ("nft",) if a in self.actions)
        else:
            actions = jail.spec.actions
        if not actions:
            raise ValueError("no action is configured to carry out a manual ban")
        now = time.time()
        ban = Ban(jail=jail_name, key_type=key_type, key=key, time=now, until=now + seconds, count=0,
                  findtime=0.0, actions=tuple(actions), manual=True)
        self.pipeline.note_ban(ban)
        self.unsaved_windows.update((j.spec.name, "key", key) for j in self.pipeline.jails if j.spec.key == key_type)
        self._apply([ban])
        self._cluster_publish([ban])
        if not self._commit([ban]):
            raise ValueError(f"banned {key_type} {key} in the actions, but the database failed "
                             f"({self.state_error}); it is kept in memory and committed when it works again")
        self._notify_status()
        label = key if key_type in ("ip", "net") else f"{key_type} {key}"
        chosen = f", the actions of jail {jail.spec.name}" if jail is not None and jail.spec.name != jail_name else ""
        return {"message": f"banned {label} for {format_duration(seconds)} via {', '.join(actions)} "
                           f"(jail {jail_name}{chosen})"}

    def _never_banned(self, key_type: str, key: str, jail: Any) -> str | None:
        """Why the automatic path would never ban this address or network, or None: loopback,
        the host's own addresses, postfix's mynetworks, `ignoreip` (global or the jail's)."""
        target = ipaddress.ip_network(key, strict=False)
        labelled: list[tuple[Any, str]] = [(n, "loopback") for n in ALWAYS_IGNORED]
        labelled += [(n, "in `ignoreip`") for n in self.config.settings.ignoreip]
        labelled += list(self.protected)
        if jail is not None:
            labelled += [(n, f"in jail {jail.spec.name}'s `ignoreip`") for n in jail.spec.ignoreip]
        for net, why in labelled:
            if net.version == target.version and target.overlaps(net):
                return f"is {why}" if target.subnet_of(net) else f"holds {net} ({why})"  # type: ignore[arg-type]
        return None

    def _cmd_explain(self, req: dict[str, Any]) -> dict[str, Any]:
        """Every decision on a key, its cause and lines, what the actions did, how to undo."""
        key_type, key = self._target(req)
        now = time.time()
        active = [self._ban_dict(b, now) for b in self.state.active_on({(key_type, key)}, now)]
        counting = []
        for jail in self.pipeline.jails:
            if jail.spec.key == key_type and key in jail.windows:
                counting.append({"jail": jail.spec.name, "count": jail.counts(now).get(key, 0),
                                 "maxretry": jail.spec.maxretry, "findtime": jail.spec.findtime})
        held = []
        for slot in self.actions.values():
            held += slot.impl.held_for(key_type, key)
        never = self._never_banned(key_type, key, None) if key_type in ("ip", "net") else None
        direct = None
        if key_type == "uid" and self.direct_smtp is not None:
            direct = self.direct_smtp.summary()["uids"].get(key)
        return {"key_type": key_type, "key": key, "active": active, "history": self.state.history(key_type, key),
                "counting": counting, "held": held, "never_banned": never,
                **({"direct_smtp": direct} if direct is not None else {})}

    def _direct_smtp_blocked(self) -> dict[str, int | None]:
        """uid -> seconds left, of the direct-smtp-block set (status)."""
        try:
            return {str(u): left for u, left in self.direct_smtp.kernel.blocked().items()}
        except Exception:
            return {}

    def _cmd_purge(self, req: dict[str, Any]) -> dict[str, Any]:
        key_type, key = self._target(req)
        purged = 0
        for slot in self.actions.values():
            purged += slot.impl.purge(key_type, key)
        return {"message": f"deleted {purged} held messages of {key_type} {key}"}

    def _cmd_unban(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("all"):
            removed = self.state.remove()
            self.state.drop_windows()
            self.unsaved_bans, self.unsaved_windows = [], set()
            for jail in self.pipeline.jails:
                jail.forget_all()
            self.holding.clear()  # no account's new mail is held any more
            everything = [b for b in removed]
            for name, slot in self.actions.items():
                # Nothing is owed any more: a ban that failed before must not be retried later.
                slot.pending_bans, slot.pending_unbans = [], []
                # An action that lifts everything at once (also what the database does not
                # know of) says so; the others undo the database's bans one by one below.
                try:
                    lifted_all = slot.impl.unban_all()
                except Exception as exc:
                    lifted_all = True  # it lifts at once, but failed: shown as failing
                    self._action_failed(slot, name, "unban", exc)
                else:
                    if lifted_all:
                        self._action_ok(slot, name)
                if lifted_all:
                    everything = [b for b in everything if name not in b.actions]
            self._unapply(everything)
            self._cluster_unbanned(req, None, None)
            self._notify_status()
            return {"message": f"lifted {len(removed)} bans"}
        key_type, key = self._target(req)
        removed = self.state.remove(key_type, key)
        if key_type == "net":
            # An unbanned network also frees the addresses banned one by one inside it.
            net = ipaddress.ip_network(key)
            for ban in self.state.active(time.time()):
                if ban.key_type == "ip" and ipaddress.ip_address(ban.key) in net:
                    removed += self.state.remove("ip", ban.key)
        lifted = {(b.key_type, b.key) for b in removed} | {(key_type, key)}
        for lifted_key in lifted:
            self.action_problems.pop(lifted_key, None)
        self.unsaved_bans = [b for b in self.unsaved_bans if (b.key_type, b.key) not in lifted]
        # Counting starts afresh only in the jails whose ban is lifted: an unban by mail-abuse
        # must not reset what slow-guess has counted for the same address.
        for ban in removed:
            self.pipeline.forget(ban.key_type, ban.key, ban.jail)
            self.unsaved_windows.add((ban.jail, "net" if ban.key_type == "net" else "key", ban.key))
        self._commit()
        peer = req.get("_peer") or {}
        self._record([(time.time(), "unban", b.jail, b.key_type, b.key, {"by_uid": peer.get("uid"), "by_pid": peer.get("pid")})
                      for b in removed or [Ban(jail="-", key_type=key_type, key=key, time=0, until=0, count=0,
                                               findtime=0, actions=())]])
        # Undo in every action even when the database had no ban (a left-over kernel element, a
        # map entry added by hand): every action's undo is idempotent.
        stub = Ban(jail="manual", key_type=key_type, key=key, time=0, until=0, count=0, findtime=0,
                   actions=tuple(self.actions))
        self._unapply(removed + [stub])
        self._cluster_unbanned(req, key_type, key)
        self._notify_status()
        label = key if key_type in ("ip", "net") else f"{key_type} {key}"
        if not removed:
            raise ValueError(f"nothing to lift: {label} has no ban (anything left of one in the actions was "
                             f"removed all the same)")
        inside = [b for b in removed if (b.key_type, b.key) != (key_type, key)]
        bans_inside = f"{len(inside)} address ban{'s' if len(inside) != 1 else ''}"
        undone = sorted({a for b in removed for a in b.actions if a in self.actions})
        jails = sorted({b.jail for b in removed})
        what = (f"lifted {bans_inside} inside {label}" if len(inside) == len(removed) else
                f"unbanned {label}" + (f" and {bans_inside} inside it" if inside else ""))
        return {"message": f"{what} (jail{'s' if len(jails) > 1 else ''} {', '.join(jails)}); "
                           f"undone: {', '.join(undone) or 'nothing'}"}
