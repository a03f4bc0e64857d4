"""The `queue-hold` action: stop a key's queued messages, let them go on unban.

Config (actions.d/queue-hold.toml): mta ("postfix", "sendmail", "exim", or "auto", the default:
the MTA mailban/mta_detect.py finds, postfix when it finds none; see docs/exim.md and
mailban/actions/exim.py); for postfix
postqueue, postsuper, postcat, scan_limit; for sendmail `sendmail` (an argv prefix, default
["/usr/sbin/sendmail"], so that `-C FILE` can be added) and `qtool` (sendmail's qtool.pl, for
purge only); timeout (seconds a program may run before it is killed and the action marked
failing; default 30). Handles `user`, `uid`, `sender` and `ip` bans.

do: list the queue, pick the key's messages that are not stopped yet, and stop them in one call.
A message belongs to the key when
- the queue-id correlation saw it submitted by that user, uid or address (ActionContext), or
- its envelope sender is the key (sender bans), or
- postfix only: its envelope names the SASL user (`postcat -e`: `sasl_username=`), checked for
  user bans on queues up to `scan_limit` messages, so that mail queued before mailban started is
  found too.
Messages submitted while the ban lasts are stopped as they arrive (`hold_more`, called by the
daemon for every new queued message of a banned key).
undo: let go what this action stopped for the key. `purge(...)` deletes it instead
(`mailban purge-held`). What was stopped is kept in a JSON file in the state directory, so a
restart does not forget it.

postfix: list `postqueue -j`; stop `postsuper -h -`; undo `postsuper -H -`; purge
`postsuper -d -` (queue ids on stdin).
sendmail: list `sendmail -bp -v` and `sendmail -bp -v -qQ` (the quarantined items); stop
`sendmail -Q"mailban queue-hold (<type> ban)" -qI<id>...` (quarantine); undo
`sendmail -Q -qQ"mailban queue-hold" -qI<id>...` (unquarantine only what mailban quarantined;
the messages then wait for the next queue run, as released postfix mail does); purge
`qtool.pl -Q -d <queue dir>/<id>...` (sendmail has no delete command; qtool.pl, shipped with
sendmail, deletes queue files under sendmail's own locks). A message that sendmail is delivering
at that moment is locked and cannot be quarantined: it is tried again at the next ticks (for
up to RETRY_FOR seconds) if its delivery is deferred.
Security note: queue ids are checked against the MTA's own queue listing and the [0-9A-Za-z]
alphabet before they are passed on; quarantine reasons are fixed text (no log or client text);
nothing reaches a shell.
Size: holding mail is the same action on three MTAs (postfix, sendmail, Exim) whose queue
commands differ; the shared part (what is held, released, explained) is most of the module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from ..core.records import Ban
from ..mta_detect import choose
from .base import ActionBase, ActionContext, check_options
from . import exim as ex
from .executor import ActionError, run, write_atomically

log = logging.getLogger("mailban.action.queue-hold")
# postfix and sendmail queue ids, and Exim's message ids (both forms, exim.MSGID)
_QID = re.compile(r"^(?:[0-9A-Za-z]{5,20}|[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}))$")
# Programs are argv lists, so that a second postfix instance is reached with `-c DIR`, a
# second sendmail with `-C FILE`.
_OPTIONS: dict[str, Any] = {"mta": str, "postqueue": list, "postsuper": list, "postcat": list, "scan_limit": int,
                            "sendmail": list, "qtool": list, "timeout": (int, float),
                            "exim": list, "spool_directory": str, "lists_dir": str}
MTAS = ("postfix", "sendmail", "exim")
# exim: the list file of each key type that its ACLs freeze new mail of (exim.ACL_LINES)
EXIM_LISTS = {"user": "held-users", "uid": "held-uids", "sender": "held-senders"}
# sendmail: every quarantine reason mailban writes starts with TAG; undo and purge touch only
# items whose reason does (not those a milter or an admin quarantined).
TAG = "mailban queue-hold"
CHUNK = 200           # queue ids per sendmail call (-qI arguments)
RETRY_EVERY = 5.0     # seconds between tries to quarantine messages that were locked
RETRY_FOR = 900.0     # give up on a locked message after this long (it was delivered, or bounced)
# `sendmail -bp -v` (8.17): "QID[*?X-] SIZE PRIORITY[+] Mon DD HH:MM SENDER", continuation lines
# (status, QUARANTINE: reason, recipients) start with white space; one section per queue directory.
_SM_ITEM = re.compile(r"^(?P<qid>[0-9A-Za-z]{5,20})(?P<flag>[*?X-]?)\s+\d+\s+\d+\+?\s*[A-Z][a-z]{2}\s+\d{1,2}\s+"
                      r"\d\d:\d\d\s(?P<sender>.*)$")
_SM_DIR = re.compile(r"^\s+(?P<dir>/[^\n]*?) (?:\(\d+ requests?|is empty)")
_SM_REASON = re.compile(r"^\s+QUARANTINE: (?P<reason>.*)$")


def parse_mailq(text: str, quarantined: bool) -> dict[str, dict[str, Any]]:
    """queue id -> {queue_id, sender, queue_name ("hold" when quarantined), dir, locked, reason}
    from `sendmail -bp -v [-qQ]`. The sender is the envelope sender without its angle brackets
    ("" for the null sender)."""
    found: dict[str, dict[str, Any]] = {}
    directory: str | None = None
    item: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _SM_DIR.match(line)
        if m:
            directory, item = m.group("dir"), None
            continue
        m = _SM_ITEM.match(line)
        if m:
            sender = m.group("sender").rstrip()
            if sender.startswith("<") and sender.endswith(">"):
                sender = sender[1:-1]
            elif sender == "MAILER-DAEMON":
                sender = ""
            item = {"queue_id": m.group("qid"), "sender": sender, "dir": directory,
                    "queue_name": "hold" if quarantined else "deferred", "locked": m.group("flag") == "*",
                    "reason": None}
            found[item["queue_id"]] = item
            continue
        m = _SM_REASON.match(line)
        if m and item is not None:
            item["reason"] = m.group("reason")
        elif line[:1] not in (" ", "\t"):
            item = None
    return found


class QueueHoldAction(ActionBase):
    # New mail of a banned key is handed to hold_more() as it is queued.
    holds_mail = True

    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        self.validate(options)
        self.name = name
        self.context = context or ActionContext()
        # "auto": the MTA this host runs (mta_detect: what /usr/sbin/sendmail is, or the only one
        # installed); an explicit setting always wins. `mta_detected` says why, for check/status.
        self.mta, self.mta_detected = choose(options.get("mta", "auto"), MTAS)
        self.postqueue = list(options.get("postqueue", ["postqueue"]))
        self.postsuper = list(options.get("postsuper", ["postsuper"]))
        self.postcat = list(options.get("postcat", ["postcat"]))
        self.sendmail = list(options.get("sendmail", ["/usr/sbin/sendmail"]))
        self.qtool = list(options.get("qtool", ["/usr/share/sendmail/qtool.pl"]))
        self.scan_limit = options.get("scan_limit", 5000)
        # exim: an argv prefix (["exim"]; ["chroot", ROOT, "exim4"] reaches a chrooted one), the
        # spool as mailban sees it (default: what `exim -bP spool_directory` says), the lists
        self.exim = list(options.get("exim", ["exim"]))
        self.spool: str | None = options.get("spool_directory") or None
        lists_dir = options.get("lists_dir", ex.LISTS_DIR)
        self.lists = {t: os.path.join(lists_dir, f) for t, f in EXIM_LISTS.items()}
        self.listed: dict[str, set[str]] = {t: set() for t in EXIM_LISTS}
        self.config_warning: str | None = None
        self.timeout = float(options.get("timeout", 30))  # seconds before a program is killed
        self.path = os.path.join(self.context.state_dir, f"held-{name}.json")
        self.held: dict[str, list[str]] = self._load()
        # sendmail: key -> {queue id: monotonic time first tried} for messages that were locked
        # (being delivered) when they were to be quarantined; retried by tick().
        self.pending: dict[str, dict[str, float]] = {}
        self.next_retry = 0.0

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        if options.get("mta", "auto") not in (*MTAS, "auto"):
            raise ValueError(f"`mta` must be one of {', '.join(MTAS)} or auto")
        if options.get("scan_limit", 0) < 0:
            raise ValueError("`scan_limit` must be 0 or more")
        if not 0 < options.get("timeout", 30) <= 600:
            raise ValueError("`timeout` must be between 0 and 600 seconds")
        for key in ("spool_directory", "lists_dir"):
            if not options.get(key, "/x").startswith("/"):
                raise ValueError(f"`{key}` must be an absolute path")

    def check_config(self) -> list[str]:
        """exim: the held-* list files that Exim's configuration does not read."""
        if self.mta != "exim":
            return []
        self.config_warning = ex.config_warning(self.exim, {f: self.lists[t] for t, f in EXIM_LISTS.items()},
                                                min(10, self.timeout))
        return [self.config_warning] if self.config_warning else []

    def health(self) -> str | None:
        return self.config_warning

    # ---- the action --------------------------------------------------------------------------
    def start(self, active: list[Ban]) -> None:
        if self.mta == "exim":
            for key_type in self.listed:
                self.listed[key_type] = {b.key for b in active if b.key_type == key_type and ex.safe(b.key, key_type)}
            self._write_lists()
            self.check_config()
        still = {self._key(b.key_type, b.key) for b in active}
        for key in [k for k in self.held if k not in still]:
            # Bans that ended while mailban was down: release their messages now.
            key_type, _, value = key.partition("\0")
            self._release(key_type, value)

    def ban(self, bans: list[Ban]) -> list[str]:
        if self.mta == "exim":
            # new mail first: Exim's ACL freezes what the key submits from now on
            new = [b for b in bans if b.key_type in self.listed and b.key not in self.listed[b.key_type]
                   and ex.safe(b.key, b.key_type)]
            for b in new:
                self.listed[b.key_type].add(b.key)
            if new:
                self._write_lists()
        queue = self.queue()
        for ban in bans:
            qids = self._belonging(ban.key_type, ban.key, queue)
            self._hold(ban.key_type, ban.key, qids, queue)
        return []

    def hold_more(self, key_type: str, key: str, qids: list[str]) -> None:
        """Hold messages that a banned key submitted after the ban (they are in the queue now)."""
        wanted = [q for q in qids if _QID.match(q)]
        if wanted:
            self._hold(key_type, key, wanted)

    def tick(self, now: float) -> None:
        """sendmail: quarantine messages that were locked (being delivered) at the first try."""
        if not self.pending or time.monotonic() < self.next_retry:
            return
        self.next_retry = time.monotonic() + RETRY_EVERY
        queue = self.queue()
        for key in list(self.pending):
            if key not in self.held:
                del self.pending[key]
                continue
            key_type, _, value = key.partition("\0")
            waiting = self.pending.pop(key)
            try:
                self._hold(key_type, value, list(waiting), queue, since=waiting)
            except ActionError:
                self.pending[key] = waiting  # tried again at the next tick
                raise

    def unban(self, bans: list[Ban]) -> None:
        if self.mta == "exim":
            gone = [b for b in bans if b.key in self.listed.get(b.key_type, ())]
            for b in gone:
                self.listed[b.key_type].discard(b.key)
            if gone:
                self._write_lists()
        for ban in bans:
            self._release(ban.key_type, ban.key)

    def unban_all(self) -> bool:
        if self.mta == "exim":
            for keys in self.listed.values():
                keys.clear()
            self._write_lists()
            # what the ACL froze for keys the database no longer knows
            for qid, item in self.queue().items():
                if item["frozen"] and item["ours"]:
                    self._exim_thaw([qid])
        for key in list(self.held):
            key_type, _, value = key.partition("\0")
            self._release(key_type, value)
        return True

    def purge(self, key_type: str, key: str) -> int:
        """Delete (instead of release) what was held for a key. Returns the number deleted."""
        qids = self.held.get(self._key(key_type, key), [])
        if self.mta == "exim":
            qids = self._exim_held(key_type, key, qids)
        deleted = len(qids)
        if qids and self.mta == "exim":
            for chunk in _chunks(qids):
                run([*self.exim, "-Mrm", *chunk], timeout=self.timeout, ok_codes=(0, 1))
            left = self.queue()
            deleted = sum(1 for q in qids if q not in left)
        elif qids and self.mta == "sendmail":
            deleted = self._sendmail_purge(qids)
        elif qids:
            run([*self.postsuper, "-d", "-"], stdin="".join(f"{q}\n" for q in qids).encode(), timeout=self.timeout)
        self.held.pop(self._key(key_type, key), None)
        self.pending.pop(self._key(key_type, key), None)
        self._save()
        return deleted

    def stop(self) -> None:
        """Held mail stays held while mailban is down; unban or expiry releases it later."""

    def held_for(self, key_type: str, key: str) -> list[str]:
        qids = list(self.held.get(self._key(key_type, key), []))
        if self.mta == "exim":
            try:
                return self._exim_held(key_type, key, qids)
            except ActionError:
                pass
        return qids

    # ---- the queue ---------------------------------------------------------------------------
    def queue(self) -> dict[str, dict[str, Any]]:
        """queue id -> record (postfix: postqueue -j's; sendmail: parse_mailq's), every message."""
        if self.mta == "exim":
            if self.spool is None:
                self.spool = ex.spool_dir(self.exim, None, self.timeout)
            return ex.scan_spool(self.spool)
        if self.mta == "sendmail":
            found = parse_mailq(self._mailq(False), quarantined=False)
            found.update(parse_mailq(self._mailq(True), quarantined=True))
            return found
        out = run([*self.postqueue, "-j"], timeout=self.timeout)
        found = {}
        for raw in out.splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            qid = item.get("queue_id")
            if isinstance(qid, str) and _QID.match(qid):
                found[qid] = item
        return found

    def _mailq(self, quarantined: bool) -> str:
        argv = [*self.sendmail, "-bp", "-v", *(["-qQ"] if quarantined else [])]
        return run(argv, timeout=self.timeout).decode("utf-8", "replace")

    def _belonging(self, key_type: str, key: str, queue: dict[str, dict[str, Any]]) -> list[str]:
        candidates = {q for q, item in queue.items() if item.get("queue_name") != "hold"}
        mine = {q for q in self.context.queue_ids(key_type, key) if q in candidates}
        if self.mta == "exim":
            # the spool header names the SASL user, the submitting uid and the sender
            field = {"user": "user", "uid": "uid", "sender": "sender"}.get(key_type)
            want: Any = int(key) if key_type == "uid" and key.isdigit() else key
            if field is not None:
                mine |= {q for q in candidates if queue[q].get(field) == want}
        elif key_type == "sender":
            mine |= {q for q in candidates if queue[q].get("sender") == key}
        elif key_type == "user" and self.mta == "postfix" and len(candidates - mine) <= self.scan_limit:
            needle = f"sasl_username={key}".encode()
            for qid in sorted(candidates - mine):
                try:
                    envelope = run([*self.postcat, "-e", "-q", qid], timeout=min(10, self.timeout))
                except ActionError:
                    continue  # delivered and gone in the meantime
                if any(line.endswith(needle) and b"named_attribute: " in line for line in envelope.splitlines()):
                    mine.add(qid)
        return sorted(mine)

    def _hold(self, key_type: str, key: str, qids: list[str], queue: dict[str, dict[str, Any]] | None = None,
              since: dict[str, float] | None = None) -> None:
        if not qids:
            self._remember(key_type, key, [])
            return
        if self.mta == "sendmail":
            self._sendmail_hold(key_type, key, qids, queue, since or {})
            return
        if self.mta == "exim":
            self._exim_hold(key_type, key, qids, queue, since or {})
            return
        run([*self.postsuper, "-h", "-"], stdin="".join(f"{q}\n" for q in qids).encode(), timeout=self.timeout)
        self._remember(key_type, key, qids)
        log.warning("held %d queued messages of %s %s", len(qids), key_type, key)

    def _release(self, key_type: str, key: str) -> None:
        qids = self.held.get(self._key(key_type, key), [])
        if self.mta == "exim":
            qids = self._exim_held(key_type, key, qids)
            self._exim_thaw(qids)
            if qids:
                log.info("thawed %d frozen messages of %s %s", len(qids), key_type, key)
            qids = []
        if qids:
            present = self.queue()
            if self.mta == "sendmail":
                qids = [q for q in qids if self._ours(present.get(q))]
                for chunk in _chunks(qids):
                    run([*self.sendmail, "-Q", f"-qQ{TAG}", *(f"-qI{q}" for q in chunk)], timeout=self.timeout)
            else:
                qids = [q for q in qids if q in present]
                if qids:
                    run([*self.postsuper, "-H", "-"], stdin="".join(f"{q}\n" for q in qids).encode(),
                        timeout=self.timeout)
            if qids:
                log.info("released %d held messages of %s %s", len(qids), key_type, key)
        self.held.pop(self._key(key_type, key), None)
        self.pending.pop(self._key(key_type, key), None)
        self._save()

    # ---- exim --------------------------------------------------------------------------------
    def _write_lists(self) -> None:
        for key_type, path in self.lists.items():
            ex.write_list(path, list(self.listed[key_type]), f"queue-hold, {key_type}s whose new mail is frozen")

    def _exim_held(self, key_type: str, key: str, recorded: list[str]) -> list[str]:
        """The key's frozen messages that mailban froze: those it recorded, and those that Exim's
        ACL froze on arrival with mailban's mark (acl_m_mailban), found in the spool headers."""
        queue = self.queue()
        field = {"user": "user", "uid": "uid", "sender": "sender"}.get(key_type)
        want: Any = int(key) if key_type == "uid" and key.isdigit() else key
        marked = [q for q, item in queue.items() if item["frozen"] and item["ours"]
                  and field is not None and item.get(field) == want]
        return [q for q in dict.fromkeys([*recorded, *marked]) if q in queue and queue[q]["frozen"]]

    def _exim_hold(self, key_type: str, key: str, qids: list[str], queue: dict[str, dict[str, Any]] | None,
                   since: dict[str, float]) -> None:
        if queue is None:
            queue = self.queue()
        wanted = [q for q in dict.fromkeys(qids) if q in queue and not queue[q]["frozen"]]
        already = [q for q in dict.fromkeys(qids) if q in queue and queue[q]["frozen"] and queue[q]["ours"]]
        for chunk in _chunks(wanted):
            # exits 1 when a message is locked (being delivered): checked below, retried by tick()
            run([*self.exim, "-Mf", *chunk], timeout=self.timeout, ok_codes=(0, 1))
        after = self.queue() if wanted else queue
        done = [q for q in wanted if after.get(q, {}).get("frozen")]
        now = time.monotonic()
        late = {q: since.get(q, now) for q in wanted if q in after and q not in done
                and now - since.get(q, now) < RETRY_FOR}
        if late:
            self.pending.setdefault(self._key(key_type, key), {}).update(late)
        self._remember(key_type, key, done + already)
        if done:
            log.warning("froze %d queued messages of %s %s", len(done), key_type, key)

    def _exim_thaw(self, qids: list[str]) -> None:
        for chunk in _chunks([q for q in qids if ex.MSGID.match(q)]):
            run([*self.exim, "-Mt", *chunk], timeout=self.timeout, ok_codes=(0, 1))

    # ---- sendmail ----------------------------------------------------------------------------
    @staticmethod
    def _ours(item: dict[str, Any] | None) -> bool:
        """A quarantined item whose reason mailban wrote."""
        return bool(item and item["queue_name"] == "hold" and (item.get("reason") or "").startswith(TAG))

    def _sendmail_hold(self, key_type: str, key: str, qids: list[str], queue: dict[str, dict[str, Any]] | None,
                       since: dict[str, float]) -> None:
        if queue is None:
            queue = self.queue()
        # only ids sendmail itself lists in its normal queue (not gone, not quarantined already)
        wanted = [q for q in dict.fromkeys(qids) if q in queue and queue[q]["queue_name"] != "hold"]
        reason = f"{TAG} ({key_type} ban)"  # fixed text: key_type is one of mailban's key types
        for chunk in _chunks(wanted):
            run([*self.sendmail, f"-Q{reason}", *(f"-qI{q}" for q in chunk)], timeout=self.timeout)
        after = self.queue() if wanted else queue
        done = [q for q in wanted if self._ours(after.get(q))]
        now = time.monotonic()
        # locked (being delivered) or raced: try again later, unless delivered and gone
        late = {q: since.get(q, now) for q in wanted if q in after and q not in done
                and after[q]["queue_name"] != "hold" and now - since.get(q, now) < RETRY_FOR}
        if late:
            self.pending.setdefault(self._key(key_type, key), {}).update(late)
        self._remember(key_type, key, done)
        if done:
            log.warning("quarantined %d queued messages of %s %s", len(done), key_type, key)

    def _sendmail_purge(self, qids: list[str]) -> int:
        queue = self.queue()
        mine = [q for q in qids if self._ours(queue.get(q)) and queue[q].get("dir")]
        for chunk in _chunks(mine):
            # qtool.pl stops at the first source that does not exist: pass only listed items
            run([*self.qtool, "-Q", "-d", *(os.path.join(queue[q]["dir"], q) for q in chunk)], timeout=self.timeout)
        left = self.queue() if mine else queue
        return sum(1 for q in mine if q not in left)

    # ---- what was held, on disk --------------------------------------------------------------
    @staticmethod
    def _key(key_type: str, key: str) -> str:
        return f"{key_type}\0{key}"

    def _remember(self, key_type: str, key: str, qids: list[str]) -> None:
        entry = self.held.setdefault(self._key(key_type, key), [])
        entry.extend(q for q in qids if q not in entry)
        self._save()

    def _load(self) -> dict[str, list[str]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return {k: [q for q in v if isinstance(q, str) and _QID.match(q)]
                for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomically(self.path, json.dumps(self.held, indent=1), mode=0o600)


def _chunks(qids: list[str]) -> list[list[str]]:
    return [qids[i:i + CHUNK] for i in range(0, len(qids), CHUNK)]
