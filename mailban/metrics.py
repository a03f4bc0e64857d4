"""Prometheus metrics, served by the standard client library (prometheus_client) on a
configurable address, loopback by default (`[mailban] metrics = "127.0.0.1:9234"`, "" for none).

Why the library: it implements the exposition format, content negotiation and a small HTTP
server that runs in its own thread; nothing here is worth writing by hand.

Inputs: counts the daemon hands over once per batch (not per line: the hot path stays lean) and
gauges it refreshes once a second. Outputs: the /metrics page. A failure to bind the address is
logged and the daemon runs on without metrics. See docs/metrics.md for example alert rules.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger("mailban.metrics")


class Metrics:
    """All of mailban's metrics; every method is a no-op when metrics are off."""

    def __init__(self, address: str) -> None:
        self.enabled = False
        if not address:
            return
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
        except ImportError:
            log.error("metrics: prometheus_client is not installed; no metrics")
            return
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry()
        r = self.registry
        self.lines = Counter("mailban_lines_read", "Log lines read, per source", ["source"], registry=r)
        self.events = Counter("mailban_events", "Events produced by the filters", ["kind", "filter"], registry=r)
        self.decisions = Counter("mailban_decisions", "Decisions taken", ["jail", "key_type"], registry=r)
        self.action_failures = Counter("mailban_action_failures", "Failed action calls", ["action"], registry=r)
        self.action_seconds = Histogram("mailban_action_seconds", "Time an action call took", ["action"],
                                        buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=r)
        self.active = Gauge("mailban_active_bans", "Decisions in force", ["jail"], registry=r)
        self.lag_bytes = Gauge("mailban_tail_lag_bytes", "Bytes written to a log and not read yet", ["source"], registry=r)
        self.idle = Gauge("mailban_source_idle_seconds", "Seconds since a line was last read from a source", ["source"], registry=r)
        self.action_ok = Gauge("mailban_action_up", "1 when the action works, 0 while it fails", ["action"], registry=r)
        self.direct_smtp_conns = Gauge("mailban_direct_smtp_connections",
                                       "Direct outbound SMTP connections counted by the kernel, per local uid "
                                       "(since its counter was made; idle a day: dropped)", ["uid", "user"], registry=r)
        try:
            start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=r)
        except (OSError, ValueError) as exc:
            log.error("metrics: cannot listen on %s: %s; running without metrics", address, exc)
            return
        self.enabled = True
        log.info("metrics on http://%s/metrics", address)

    def batch(self, source: str, lines: int, events: Mapping[tuple[str, str], int] | None, bans: list[Any]) -> None:
        if not self.enabled:
            return
        self.lines.labels(source).inc(lines)
        for (kind, filt), n in (events or {}).items():
            self.events.labels(kind, filt).inc(n)
        for ban in bans:
            self.decisions.labels(ban.jail, ban.key_type).inc()

    def action(self, name: str, seconds: float, ok: bool) -> None:
        if not self.enabled:
            return
        self.action_seconds.labels(name).observe(seconds)
        self.action_ok.labels(name).set(1 if ok else 0)
        if not ok:
            self.action_failures.labels(name).inc()

    def gauges(self, active: dict[str, int], lag_bytes: dict[str, int], idle: dict[str, float]) -> None:
        if not self.enabled:
            return
        for jail, n in active.items():
            self.active.labels(jail).set(n)
        for source, n in lag_bytes.items():
            self.lag_bytes.labels(source).set(n)
        for source, seconds in idle.items():
            self.idle.labels(source).set(seconds)

    def direct_smtp(self, summary: dict[str, Any]) -> None:
        """Per uid, the connections the kernel counted (directsmtp.source.summary())."""
        if not self.enabled:
            return
        for uid, info in summary.get("uids", {}).items():
            self.direct_smtp_conns.labels(uid, info.get("user", uid)).set(info.get("connections", 0))
