"""Fleet mode: mail hosts share counting windows and decisions through one Redis.

Inputs (from the daemon's loop, the only caller): what shared jails counted in a batch
(`Jail.shared_out`: key, log time, weight, line, ip), this node's own decisions (bans, unbans),
and acknowledgements of what the loop applied. Outputs (`poll()`, in the loop): fleet-wide
threshold crossings (the loop turns them into decisions with `Jail.decide_shared`), decisions
made by other nodes (read from a Redis Stream), health changes, and a status snapshot.

Redis key schema (`P` is `[cluster].prefix`; docs/cluster.md has the full table):
- `P:w:JAIL:KEY`    sorted set, one member per counted event `node|seq|weight|line` scored by its
                    log time; trimmed to the jail's findtime on every update and expiring when
                    idle; deleted when the fleet-wide sum reaches maxretry (one decision).
- `P:banned`        hash `KEYTYPE|KEY` -> JSON {jail: until}: keys decided somewhere, not counted
                    again until then; cleared by an unban.
- `P:decisions`     stream of decisions (fields id, node, op = ban|unban|unban-all, data = JSON),
                    capped with XADD MAXLEN ~ `stream_maxlen`.
- `P:id:ID`         "published" marker per decision id (expires with the ban, a week for an
                    unban): publishing the same decision twice adds one stream entry.
- `P:node:NODE`     hash heartbeat (time, applied stream id, version), expiring after three
                    heartbeats; `P:nodes` sorted set of node names by last heartbeat.
Both updates are Lua scripts, so each is atomic: two nodes can never both see the same crossing.

Local state (the daemon's SQLite file, tables of this module's own): `cluster_outbox` (this node's
decisions, kept until published and, for bans, while they last: they are published again when
Redis comes back, possibly emptied by a restart), `cluster_applied` (decision ids applied from
other nodes: dedupe) and `cluster_meta` (the last stream id applied: where a restart resumes).

Threads: two I/O threads (a writer for counting, publishing and heartbeats, and a reader blocked
in XREAD) so that a slow or unreachable Redis never stalls detection: they only talk to Redis and
hand results to the loop through a queue and a wake-up socket; every state change is made by the
loop. When Redis is unreachable the writer keeps this node's decisions and recent events and
sends them when it returns; the reader resumes from the last id it read.
Must never: apply a decision itself (the daemon does, through its actions), block the loop on the
network, or lose a decision of this node (the outbox is written before anything is sent).
Security note: Redis is a trust boundary. Whoever can write to it can ban addresses on every
node, so use a password and TLS; decisions read from it are validated as Ban records, and the
daemon still refuses addresses it never bans (its own, mynetworks, ignoreip).
Size: the Redis key schema, its Lua scripts, the local outbox and the two I/O threads are one
protocol (what the writer sends, the reader expects); the daemon side is daemon/fleet.py.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any, Iterable

from .config import ClusterSettings
from .core.records import Ban

log = logging.getLogger("mailban.cluster")

BLOCK_MS = 2000  # XREAD BLOCK: the reader wakes at least this often (to notice a stop)
READ_COUNT = 500
RETRY_MIN, RETRY_MAX = 0.25, 2.0
MAX_PENDING_EVENTS = 100_000  # events kept while Redis is away (older ones are dropped first)
LINE_MAX = 400  # characters of a log line kept in a shared window (lines go into `list`)
APPLIED_KEEP = 8 * 86400
UNBAN_ID_TTL_MS = 7 * 86400 * 1000
PUBLISH_BATCH = 500

# KEYS[1]: the banned hash (window keys are built from ARGV[2], the prefix: declaring thousands of
# keys costs more than the counting; a `{tag}` prefix keeps them in one Redis Cluster slot).
# ARGV[1] = now (epoch, for the banned hash); ARGV[2] = prefix; ARGV[3] = JSON list of windows
# [jail, field, key, findtime, maxretry, [[log time, member], ...]] (one JSON string: cjson
# decodes it far faster than the client packs one argument per event).
COUNT_LUA = """
local banned = KEYS[1]
local now = tonumber(ARGV[1])
local prefix = ARGV[2]
local out = {}
for i, g in ipairs(cjson.decode(ARGV[3])) do
  local jail, field, key, findtime, maxretry, events = g[1], g[2], g[3], g[4], g[5], g[6]
  local win = prefix .. ':w:' .. jail .. ':' .. key
  local held = false
  local raw = redis.call('HGET', banned, field)
  if raw then
    local until_ = cjson.decode(raw)[jail]
    held = until_ ~= nil and tonumber(until_) > now
  end
  if not held then
    for _, e in ipairs(events) do
      redis.call('ZADD', win, e[1], e[2])
    end
    local newest = redis.call('ZRANGE', win, -1, -1, 'WITHSCORES')
    redis.call('ZREMRANGEBYSCORE', win, '-inf', tonumber(newest[2]) - findtime)
    local members = redis.call('ZRANGE', win, 0, -1)
    local total, nodes, seen = 0, 0, {}
    for _, m in ipairs(members) do
      local node, w = string.match(m, '^([^|]*)|[^|]*|(%d+)|')
      total = total + tonumber(w or '1')
      if node and not seen[node] then
        seen[node] = true
        nodes = nodes + 1
      end
    end
    if total >= maxretry then
      redis.call('DEL', win)
      local lines = {}
      for k = math.max(1, #members - 19), #members do
        lines[#lines + 1] = string.match(members[k], '^[^|]*|[^|]*|%d+|(.*)$') or ''
      end
      out[#out + 1] = {i, total, newest[2], nodes, lines}
    else
      redis.call('PEXPIRE', win, math.floor(findtime * 1000) + 60000)
    end
  end
end
return out
"""

# KEYS[1] stream, KEYS[2] the id marker, KEYS[3] the banned hash, KEYS[4..] windows to drop.
# ARGV: id, node, op, data, maxlen, id ttl (ms), field (KEYTYPE|KEY), jail, until.
PUBLISH_LUA = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[6]) then
  return false
end
local sid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*',
                       'id', ARGV[1], 'node', ARGV[2], 'op', ARGV[3], 'data', ARGV[4])
if ARGV[3] == 'ban' then
  local raw = redis.call('HGET', KEYS[3], ARGV[7])
  local held = raw and cjson.decode(raw) or {}
  local old = tonumber(held[ARGV[8]] or '0')
  if tonumber(ARGV[9]) > old then held[ARGV[8]] = tonumber(ARGV[9]) end
  redis.call('HSET', KEYS[3], ARGV[7], cjson.encode(held))
elseif ARGV[3] == 'unban' then
  redis.call('HDEL', KEYS[3], ARGV[7])
elseif ARGV[3] == 'unban-all' then
  redis.call('DEL', KEYS[3])
end
for i = 4, #KEYS do
  redis.call('DEL', KEYS[i])
end
return sid
"""

Job = tuple[str, Any]


def ban_data(ban: Ban) -> dict[str, Any]:
    return asdict(ban)


def ban_from(data: dict[str, Any]) -> Ban:
    """A Ban from a stream entry's data (validated by Ban itself: ValueError/TypeError)."""
    fields = {k: data[k] for k in ("jail", "key_type", "key", "time", "until", "count", "findtime")}
    return Ban(
        jail=str(fields["jail"]), key_type=str(fields["key_type"]), key=str(fields["key"]),
        time=float(fields["time"]), until=float(fields["until"]), count=int(fields["count"]),
        findtime=float(fields["findtime"]), actions=tuple(str(a) for a in data.get("actions", ())),
        lines=tuple(str(x) for x in data.get("lines", ()))[-20:], manual=bool(data.get("manual")),
        ips=tuple(str(x) for x in data.get("ips", ())), cause=str(data.get("cause", "")),
        repeat=int(data.get("repeat", 0)), observe=bool(data.get("observe")),
    )


def redacted(url: str) -> str:
    """The URL without its password (for status and logs)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        cred, _, host = rest.rpartition("@")
        user = cred.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in cred else f"***@{host}"
    return scheme + sep + rest


def _id_ms(stream_id: str | None) -> int:
    try:
        return int(str(stream_id).split("-")[0])
    except ValueError:
        return 0


class Store:
    """This module's tables in the daemon's SQLite file (its own connection, loop thread only)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS cluster_outbox (
        id TEXT PRIMARY KEY, time REAL NOT NULL, op TEXT NOT NULL, key_type TEXT NOT NULL,
        key TEXT NOT NULL, until REAL NOT NULL, data TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS cluster_applied (id TEXT PRIMARY KEY, time REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS cluster_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=1.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(self.SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, row: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO cluster_outbox VALUES (?,?,?,?,?,?,?,0)",
                            (row["id"], row["time"], row["op"], row["key_type"], row["key"], row["until"],
                             json.dumps(row["data"])))

    def published(self, ids: Iterable[str]) -> None:
        with self.db:
            self.db.executemany("UPDATE cluster_outbox SET published = 1 WHERE id = ?", [(i,) for i in ids])

    def to_send(self, now: float) -> list[dict[str, Any]]:
        """Unpublished decisions, and published bans still in force (Redis may have lost them)."""
        rows = self.db.execute(
            "SELECT id, time, op, key_type, key, until, data FROM cluster_outbox "
            "WHERE published = 0 OR (op = 'ban' AND until > ?) ORDER BY time", (now,)).fetchall()
        return [{"id": r[0], "time": r[1], "op": r[2], "key_type": r[3], "key": r[4], "until": r[5],
                 "data": json.loads(r[6])} for r in rows]

    def unsent(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM cluster_outbox WHERE published = 0").fetchone()[0])

    def lifted(self, key_type: str | None, key: str | None) -> None:
        """A key was unbanned (here or elsewhere): its bans are not to be published again."""
        with self.db:
            if key is None:
                self.db.execute("DELETE FROM cluster_outbox WHERE op = 'ban' AND published = 1")
            else:
                self.db.execute("DELETE FROM cluster_outbox WHERE op = 'ban' AND published = 1 "
                                "AND key_type = ? AND key = ?", (key_type, key))

    def prune(self, now: float) -> None:
        with self.db:
            self.db.execute("DELETE FROM cluster_outbox WHERE published = 1 AND (op != 'ban' OR until <= ?)", (now,))
            self.db.execute("DELETE FROM cluster_applied WHERE time < ?", (now - APPLIED_KEEP,))

    def seen(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            found.update(r[0] for r in self.db.execute(
                f"SELECT id FROM cluster_applied WHERE id IN ({','.join('?' * len(part))})", part))
        return found

    def done(self, last_id: str, ids: list[str], now: float) -> None:
        """Decisions applied and where the stream was read to, in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO cluster_applied VALUES (?,?)", [(i, now) for i in ids])
            self.db.execute("INSERT OR REPLACE INTO cluster_meta VALUES ('last_id', ?)", (last_id,))

    def last_id(self) -> str:
        row = self.db.execute("SELECT value FROM cluster_meta WHERE name = 'last_id'").fetchone()
        return str(row[0]) if row else "0"


class Cluster:
    """The loop's side: queue work for the I/O threads, take their results (see the header)."""

    def __init__(self, settings: ClusterSettings, state_path: str, version: str) -> None:
        self.settings = settings
        self.node = settings.node
        self.prefix = settings.prefix
        self.version = version
        self.store = Store(state_path)
        self.applied_id = self.store.last_id()
        self.error: str | None = None
        self.error_since = 0.0
        self._errors: dict[str, str] = {}  # per I/O thread
        self.results: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._boot = f"{int(time.time() * 1000):x}"
        self._seq = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._view: dict[str, Any] = {}
        self._backlog = 0  # events waiting in the writer (Redis away)
        self._shared = 0  # events Redis has counted (for status and bench/cluster.py)
        self._threads: list[threading.Thread] = []
        self._next_prune = 0.0

    # ---- keys ---------------------------------------------------------------------------------
    def k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        writer = _Writer(self)
        reader = _Reader(self, self.applied_id)
        self._threads = [threading.Thread(target=writer.run, name="mailban-cluster-writer", daemon=True),
                         threading.Thread(target=reader.run, name="mailban-cluster-reader", daemon=True)]
        for row in self.store.to_send(time.time()):
            self._jobs.put(("publish", row))
        for t in self._threads:
            t.start()
        log.info("cluster: node %s, Redis %s, reading decisions after %s", self.node,
                 redacted(self.settings.url), self.applied_id)

    def stop(self) -> None:
        """Stop the writer (what it had not sent is in the outbox, or only partial counts). The
        reader may sit in XREAD BLOCK for a while: it is a daemon thread, left to the exit."""
        self._stop.set()
        self._jobs.put(("stop", None))
        if self._threads:
            self._threads[0].join(timeout=1.0)
        self.store.close()
        self._wake_r.close()
        self._wake_w.close()

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or stopping

    # ---- the loop hands work over ---------------------------------------------------------------
    def share(self, jails: Iterable[Any]) -> None:
        """Send what shared jails counted since the last call (one Redis round trip)."""
        groups: list[tuple[str, str, float, int, list[tuple[float, str]]]] = []
        for jail in jails:
            out = jail.shared_out
            if not out:
                continue
            jail.shared_out = []
            spec = jail.spec
            by_key: dict[str, list[tuple[float, str]]] = {}
            for key, when, weight, line, _ip in out:
                self._seq += 1
                member = f"{self.node}|{self._boot}.{self._seq}|{int(weight)}|{line[:LINE_MAX]}"
                by_key.setdefault(key, []).append((when, member))
            for key, events in by_key.items():
                groups.append((spec.name, f"{spec.key}|{key}", spec.findtime, spec.maxretry, events))
        if groups:
            self._jobs.put(("count", groups))

    def publish(self, op: str, key_type: str = "", key: str = "", ban: Ban | None = None,
                windows: Iterable[str] = ()) -> None:
        """Queue one of this node's decisions (written to the outbox first: never lost)."""
        now = time.time()
        data: dict[str, Any] = ban_data(ban) if ban is not None else {"key_type": key_type, "key": key}
        data["windows"] = list(windows)
        row = {"id": f"{self.node}.{uuid.uuid4().hex[:20]}", "time": now, "op": op,
               "key_type": ban.key_type if ban else key_type, "key": ban.key if ban else key,
               "until": ban.until if ban else now, "data": data}
        try:
            self.store.add(row)
        except sqlite3.Error as exc:
            log.error("cluster: cannot write the outbox (%s); the decision is sent from memory", exc)
        self._jobs.put(("publish", row))

    def lifted(self, key_type: str | None, key: str | None) -> None:
        try:
            self.store.lifted(key_type, key)
        except sqlite3.Error as exc:
            log.error("cluster: cannot update the outbox: %s", exc)

    # ---- results for the loop -------------------------------------------------------------------
    def poll(self) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str, dict[str, Any]]], str | None]:
        """(crossings, decisions of other nodes not applied yet, the last stream id read).
        crossings: (jail, key, total, log time, nodes, lines); decisions: (stream id, id, op,
        data with "node"). The caller applies them, then calls `applied(ids, last)`."""
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, OSError):
            pass
        crossings: list[tuple[Any, ...]] = []
        entries: list[tuple[str, dict[str, str]]] = []
        acked: list[str] = []
        while True:
            try:
                kind, value = self.results.get_nowait()
            except queue.Empty:
                break
            if kind == "crossing":
                crossings.append(value)
            elif kind == "entries":
                entries.extend(value)
            elif kind == "published":
                acked.append(value)
            elif kind == "health":
                self._health(*value)
        if acked:
            try:
                self.store.published(acked)
            except sqlite3.Error as exc:
                log.error("cluster: cannot update the outbox: %s", exc)
        decisions: list[tuple[str, str, str, dict[str, Any]]] = []
        if entries:
            try:
                seen = self.store.seen([f.get("id", "") for _sid, f in entries])
            except sqlite3.Error:
                seen = set()
            for sid, f in entries:
                if f.get("node") == self.node or f.get("id") in seen:
                    continue
                seen.add(f.get("id", ""))  # published twice (a resend): applied once
                try:
                    data = json.loads(f.get("data", "{}"))
                    if not isinstance(data, dict):
                        raise ValueError("not an object")
                except ValueError:
                    log.warning("cluster: stream entry %s is not a decision; skipped", sid)
                    continue
                data["node"] = str(f.get("node", "?"))
                decisions.append((sid, str(f.get("id", sid)), str(f.get("op", "")), data))
        now = time.time()
        if now >= self._next_prune:
            self._next_prune = now + 60
            try:
                self.store.prune(now)
            except sqlite3.Error:
                pass
        return crossings, decisions, entries[-1][0] if entries else None

    def applied(self, ids: list[str], last: str) -> None:
        """The loop applied these decisions and read the stream up to `last`."""
        try:
            self.store.done(last, ids, time.time())
        except sqlite3.Error as exc:
            log.error("cluster: cannot record applied decisions: %s", exc)
        self.applied_id = last

    def _health(self, source: str, error: str | None, restarted: bool) -> None:
        """A thread's view of Redis: the fault is logged once, the recovery once."""
        was = self.error
        if error is not None:
            self._errors[source] = error
        else:
            self._errors.pop(source, None)
        self.error = next(iter(self._errors.values()), None)
        if self.error is not None and was is None:
            log.error("cluster: Redis %s unreachable: %s; detecting and banning locally, "
                      "decisions queued until it returns", redacted(self.settings.url), self.error)
            self.error_since = time.time()
        elif self.error is None and was is not None:
            log.info("cluster: Redis %s reachable again: sending queued decisions", redacted(self.settings.url))
        if source == "writer" and error is None and restarted:
            # (Re)connected: publish again what is still in force, since a restarted Redis may
            # have lost it (the per-decision id markers make this idempotent when it did not).
            rows = self.store.to_send(time.time())
            if rows:
                log.info("cluster: connected to Redis %s: publishing %d decisions of this node (queued, "
                         "or in force)", redacted(self.settings.url), len(rows))
            for row in rows:
                self._jobs.put(("publish", row))

    # ---- status -------------------------------------------------------------------------------
    def status(self, bans: list[dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            view = dict(self._view)
        last = view.get("last_id") or "0"
        now = time.time()
        nodes = []
        for n in view.get("nodes", []):
            applied = n.get("applied") or "0"
            lag = 0.0 if applied == last or _id_ms(applied) >= _id_ms(last) else (_id_ms(last) - _id_ms(applied)) / 1000
            nodes.append({"node": n["node"], "seen": round(now - float(n.get("time", 0)), 1), "applied": applied,
                          "lag": round(lag, 3), "version": n.get("version", "")})
        try:
            unsent = self.store.unsent()
        except sqlite3.Error:
            unsent = -1
        return {
            "node": self.node, "url": redacted(self.settings.url), "prefix": self.prefix,
            "connected": self.error is None and bool(view), "error": self.error,
            "error_since": self.error_since if self.error else None,
            "outbox": unsent, "events_waiting": self._backlog, "events_shared": self._shared,
            "applied": self.applied_id,
            "stream": {"last_id": last, "length": view.get("length", 0)}, "nodes": nodes,
            "shared_bans": [b for b in bans if b.get("cause", "").startswith(("node ", "fleet"))],
        }

    def status_line(self) -> str | None:
        if self.error is None:
            return None
        try:
            unsent = self.store.unsent()
        except sqlite3.Error:
            unsent = 0
        return f"CLUSTER DOWN ({unsent} decisions queued): {self.error}"

    # ---- for the threads ----------------------------------------------------------------------
    def client(self, read_timeout: float | None = None) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        cs = self.settings
        kwargs: dict[str, Any] = {
            "socket_timeout": read_timeout or cs.timeout, "socket_connect_timeout": cs.timeout,
            "decode_responses": True, "encoding_errors": "replace",
            # The threads retry on their own schedule (and report the fault at once).
            "retry": Retry(NoBackoff(), 0), "health_check_interval": 0,
        }
        password = cs.password
        if cs.password_file:
            with open(cs.password_file, encoding="utf-8") as fh:
                password = fh.read().strip()
        if password:
            kwargs["password"] = password
        if cs.url.startswith("rediss://"):
            # Verify the server: a certificate chaining to `tls_ca` (default: the system's CAs)
            # that names the URL's host. Said explicitly: redis-py 5 (allowed by pyproject) did
            # not check the name by default, and any certificate from a shared CA would pass.
            kwargs["ssl_cert_reqs"] = "required"
            kwargs["ssl_check_hostname"] = True
            if cs.tls_ca:
                kwargs["ssl_ca_certs"] = cs.tls_ca
        return redis.Redis.from_url(cs.url, **kwargs)

    def report(self, kind: str, value: Any) -> None:
        self.results.put((kind, value))
        self.wake()


class _Writer:
    """Counting, publishing and heartbeats, in order; keeps its work while Redis is away."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.counts: list[tuple[str, str, float, int, list[tuple[float, str]]]] = []
        self.publishes: dict[str, dict[str, Any]] = {}
        self.up = False
        self.run_id: str | None = None
        self.next_beat = 0.0

    def run(self) -> None:
        c = self.c
        r = None
        backoff = RETRY_MIN
        retry_at = 0.0
        while not c._stop.is_set():
            wait = max(0.0, (self.next_beat if self.up else retry_at) - time.monotonic())
            try:
                kind, value = c._jobs.get(timeout=wait)
                while True:  # take everything queued: one round trip for many batches
                    self._take(kind, value)
                    kind, value = c._jobs.get_nowait()
            except queue.Empty:
                pass
            if c._stop.is_set():
                return
            if not self.up and time.monotonic() < retry_at:
                continue  # Redis away: new work waits for the next try, not a connect per batch
            try:
                if r is None:
                    r = c.client()
                    self.count_script = r.register_script(COUNT_LUA)
                    self.publish_script = r.register_script(PUBLISH_LUA)
                restarted = False
                if not self.up or time.monotonic() >= self.next_beat:
                    restarted = self._beat(r)
                if not self.up or restarted:
                    # Back (or a Redis that restarted, possibly empty): the loop republishes.
                    c.report("health", ("writer", None, True))
                    self.up = True
                    backoff = RETRY_MIN
                self._flush(r)
            except Exception as exc:  # redis.RedisError, OSError, a bad password file
                self.up = False
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, RETRY_MAX)
                c.report("health", ("writer", f"{type(exc).__name__}: {exc}", False))
                r = _close_quietly(r)
            c._backlog = sum(len(g[4]) for g in self.counts)

    def _take(self, kind: str, value: Any) -> None:
        if kind == "count":
            self.counts.extend(value)
            excess = sum(len(g[4]) for g in self.counts) - MAX_PENDING_EVENTS
            while excess > 0 and self.counts:
                excess -= len(self.counts.pop(0)[4])  # the oldest events go first
        elif kind == "publish":
            self.publishes[value["id"]] = value

    def _flush(self, r: Any) -> None:
        c = self.c
        st = c.settings
        while self.publishes:  # in order, up to PUBLISH_BATCH per round trip
            batch = list(self.publishes.items())[:PUBLISH_BATCH]
            pipe = r.pipeline(transaction=False)
            for pid, row in batch:
                data = row["data"]
                ttl = int(max(1.0, row["until"] - time.time()) * 1000) if row["op"] == "ban" else UNBAN_ID_TTL_MS
                windows = [c.k("w", w) for w in data.get("windows", ())]
                self.publish_script(
                    keys=[c.k("decisions"), c.k("id", pid), c.k("banned"), *windows],
                    args=[pid, c.node, row["op"], json.dumps(data), st.stream_maxlen, ttl,
                          f"{row['key_type']}|{row['key']}", data.get("jail", ""), row["until"]],
                    client=pipe)
            pipe.execute()
            for pid, _row in batch:
                del self.publishes[pid]
                c.report("published", pid)
        if self.counts:
            groups = self.counts
            payload = json.dumps([[jail, field, field.split("|", 1)[1], findtime, maxretry, events]
                                  for jail, field, findtime, maxretry, events in groups])
            found = self.count_script(keys=[c.k("banned")], args=[repr(time.time()), c.prefix, payload])
            self.counts = []
            c._shared += sum(len(g[4]) for g in groups)
            for index, total, newest, nodes, lines in found:
                jail, field = groups[int(index) - 1][0], groups[int(index) - 1][1]
                c.report("crossing", (jail, field.split("|", 1)[1], int(total), float(newest), int(nodes),
                                      tuple(str(x) for x in lines)))

    def _beat(self, r: Any) -> bool:
        """Heartbeat and the status snapshot; True when Redis restarted since the last one."""
        c = self.c
        now = time.time()
        ttl = max(3, int(c.settings.heartbeat * 3))
        pipe = r.pipeline(transaction=False)
        pipe.hset(c.k("node", c.node), mapping={"time": repr(now), "applied": c.applied_id, "version": c.version})
        pipe.expire(c.k("node", c.node), ttl)
        pipe.zadd(c.k("nodes"), {c.node: now})
        pipe.zremrangebyscore(c.k("nodes"), "-inf", now - 86400)
        pipe.zrangebyscore(c.k("nodes"), now - ttl, "+inf")
        pipe.xrevrange(c.k("decisions"), count=1)
        pipe.xlen(c.k("decisions"))
        pipe.info("server")
        _h, _e, _z, _zr, names, last, length, info = pipe.execute()
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(c.k("node", name))
        nodes = [dict(h, node=n) for n, h in zip(names, pipe.execute()) if h]
        with c._lock:
            c._view = {"nodes": nodes, "last_id": last[0][0] if last else "0", "length": length}
        self.next_beat = time.monotonic() + c.settings.heartbeat
        run_id = info.get("run_id")
        restarted = self.run_id is not None and run_id != self.run_id
        self.run_id = run_id
        return restarted


class _Reader:
    """XREAD BLOCK on the decision stream, from the last id read; hands entries to the loop."""

    def __init__(self, cluster: Cluster, last_id: str) -> None:
        self.c = cluster
        self.last_id = last_id

    def run(self) -> None:
        c = self.c
        r = None
        backoff = RETRY_MIN
        failed = False
        while not c._stop.is_set():
            try:
                if r is None:
                    r = c.client(read_timeout=c.settings.timeout + BLOCK_MS / 1000)
                got = r.xread({c.k("decisions"): self.last_id}, count=READ_COUNT, block=BLOCK_MS)
                if failed:
                    c.report("health", ("reader", None, False))
                    failed = False
                backoff = RETRY_MIN
                for _stream, entries in got or []:
                    if entries:
                        self.last_id = entries[-1][0]
                        c.report("entries", [(sid, fields) for sid, fields in entries])
            except Exception as exc:
                failed = True
                c.report("health", ("reader", f"{type(exc).__name__}: {exc}", False))
                r = _close_quietly(r)
                c._stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX)


def _close_quietly(r: Any) -> None:
    """Drop a connection that just failed; closing it may fail too, and that changes nothing."""
    try:
        if r is not None:
            r.close()
    except Exception:
        pass
    return None
