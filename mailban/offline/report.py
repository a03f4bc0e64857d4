"""`mailban replay --report`: what would my thresholds do on my own traffic?

Inputs: log files and the configuration. Output: per jail, the peak count (or points, or
recipients) each key reached within the jail's find-time, and from those: how many keys each
threshold in a range would act on, the distribution of peaks, the top keys, the near-misses just
under the threshold, and for account jails the busiest keys that stay under it (the legitimate
bulk senders an admin must not catch). Rendered as text with bar charts for a terminal, or as a
self-contained HTML page with SVG plots (`--html FILE`; no script, no external resource).

It runs the same parse, filter and correlation stages as the daemon and counts with the jails'
own selection and weights, but keeps every key's event times (the daemon forgets them after
findtime), so that the peak over the whole log is exact. Memory: at most MAX_KEYS keys per jail
are followed (the first ones seen); the report says when keys were left out.
Must never: execute an action.
"""

from __future__ import annotations

import heapq
import html
import time
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator

from ..config import Config
from ..core.durations import format_duration
from ..core.jails import Jail, JailSpec
from ..core.records import Event
from ..localtime import local_to_epoch
from .run import ReadCount, matched_lines

MAX_KEYS = 500_000
TOP = 15


@dataclass
class JailReport:
    """One jail's peaks: it selects, keys and weighs events with the jail's own
    `Jail.counted_key` and `JailSpec.weight` (the daemon's counting, ignore lists included), and
    keeps every time, where the jail keeps a window: a peak over the whole log is not a
    threshold count."""

    jail: Jail
    times: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    dropped: int = 0
    peaks: dict[str, int] = field(default_factory=dict)
    # account jails with min_ips: the distinct addresses of each key over the logs (capped)
    addresses: dict[str, set[str]] = field(default_factory=dict)

    @property
    def spec(self) -> JailSpec:
        return self.jail.spec

    def add(self, event: Event) -> None:
        key = self.jail.counted_key(event)
        if key is None:
            return
        spec = self.spec
        weight = spec.weight(event, self.jail.weights)
        if weight <= 0:
            return
        entries = self.times.get(key)
        if entries is None:
            if len(self.times) >= MAX_KEYS:
                self.dropped += 1
                return
            entries = self.times[key] = []
        entries.append((event.time, weight))
        if spec.min_ips and event.ip is not None:
            seen = self.addresses.setdefault(key, set())
            if len(seen) < 1024:
                seen.add(event.ip)

    def finish(self) -> None:
        """Each key's peak total within any window of findtime (two pointers over its times)."""
        findtime = self.spec.findtime
        for key, entries in self.times.items():
            entries.sort()
            best = total = start = 0
            for end, (t, w) in enumerate(entries):
                total += w
                while entries[start][0] <= t - findtime:
                    total -= entries[start][1]
                    start += 1
                best = max(best, total)
            if self.spec.min_ips and len(self.addresses.get(key, ())) < self.spec.min_ips:
                best = min(best, self.spec.maxretry - 1) if best else 0  # never acted on: too few addresses
            self.peaks[key] = best

    def thresholds(self) -> list[tuple[int, int]]:
        """(threshold, keys that would be acted on) over a range around the configured one."""
        current = self.spec.maxretry
        top = max(self.peaks.values(), default=0)
        high = max(current * 2, min(top, current * 4), 10)
        step = max(1, high // 20)
        values = sorted({*range(max(1, step), high + 1, step), current})
        ordered = sorted(self.peaks.values())
        n = len(ordered)
        out = []
        for threshold in values:
            lo, hi = 0, n
            while lo < hi:  # first peak >= threshold
                mid = (lo + hi) // 2
                if ordered[mid] < threshold:
                    lo = mid + 1
                else:
                    hi = mid
            out.append((threshold, n - lo))
        return out

    def histogram(self, buckets: int = 12) -> list[tuple[str, int]]:
        if not self.peaks:
            return []
        top = max(self.peaks.values())
        width = max(1, -(-top // buckets))
        counts = [0] * (-(-top // width) + 1)
        for peak in self.peaks.values():
            counts[peak // width] += 1
        return [(f"{i * width}-{i * width + width - 1}" if width > 1 else str(i), c)
                for i, c in enumerate(counts) if i > 0 or c]

    def top(self) -> list[tuple[str, int]]:
        return heapq.nlargest(TOP, self.peaks.items(), key=lambda kv: kv[1])

    def near_misses(self) -> list[tuple[str, int]]:
        floor = max(1, int(self.spec.maxretry * 0.6))
        under = [(k, p) for k, p in self.peaks.items() if floor <= p < self.spec.maxretry]
        return heapq.nlargest(TOP, under, key=lambda kv: kv[1])

    def busiest_under(self) -> list[tuple[str, int]]:
        under = [(k, p) for k, p in self.peaks.items() if p < self.spec.maxretry]
        return heapq.nlargest(TOP, under, key=lambda kv: kv[1])


def events_from(config: Config, paths: list[str]) -> Iterator[Event]:
    """The daemon's parse, filter and correlation stages over logs merged by time."""
    pipeline = config.pipeline(time.time(), local_to_epoch)
    for _t, _n, _line, header, events in matched_lines(paths, pipeline.parser, pipeline.filters, ReadCount()):
        if events is not None:  # None: only events no jail selects (core/needs.py)
            yield from pipeline.correlated(events, header)


def build(config: Config, events: Iterable[Event]) -> list[JailReport]:
    """Every enabled jail's report (inline ones too: the logs' submissions are what their
    policy checks count)."""
    reports = [JailReport(config.jail(spec)) for spec in config.jails if spec.enabled]
    for event in events:
        for report in reports:
            report.add(event)
    for report in reports:
        report.finish()
    return reports


# ---- text ----------------------------------------------------------------------------------
def _bar(value: int, top: int, width: int = 40) -> str:
    return "#" * (round(width * value / top) if top else 0)


def render_text(reports: list[JailReport], out: IO[str]) -> None:
    unit = {"events": "events", "recipients": "recipients", "score": "points"}
    for r in reports:
        spec = r.spec
        acted = sum(1 for p in r.peaks.values() if p >= spec.maxretry)
        out.write(f"\n== jail {spec.name}: {len(r.peaks)} {spec.key}s seen; at maxretry {spec.maxretry} "
                  f"({unit[spec.count]} within {format_duration(spec.findtime)}) {acted} would be acted on\n")
        if r.dropped:
            out.write(f"   ({r.dropped} events of keys beyond the first {MAX_KEYS} were not followed)\n")
        if spec.min_ips:
            out.write(f"   (keys seen from fewer than {spec.min_ips} addresses are shown just under the threshold)\n")
        rows = r.thresholds()
        top = max((n for _, n in rows), default=0)
        out.write("   threshold  keys acted on\n")
        for threshold, n in rows:
            mark = " <- configured" if threshold == spec.maxretry else ""
            out.write(f"   {threshold:>9}  {n:>7} {_bar(n, top)}{mark}\n")
        hist = r.histogram()
        if hist:
            top_h = max(c for _, c in hist)
            out.write(f"   peak {unit[spec.count]} within findtime: keys\n")
            for label, count in hist:
                out.write(f"   {label:>9}  {count:>7} {_bar(count, top_h)}\n")
        for title, rows2 in (("top", r.top()), ("near misses (60-99% of the threshold)", r.near_misses())):
            if rows2:
                out.write(f"   {title}: " + ", ".join(f"{_safe(k)} ({p})" for k, p in rows2) + "\n")
        if spec.key != "ip":
            busy = r.busiest_under()
            if busy:
                out.write("   busiest under the threshold (legitimate bulk senders?): "
                          + ", ".join(f"{_safe(k)} ({p})" for k, p in busy) + "\n")


def _safe(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:200]


# ---- HTML ----------------------------------------------------------------------------------
def _svg_bars(rows: list[tuple[str, int]], mark: str | None, title: str, cls: str) -> str:
    width, bar_h, gap, left = 640, 16, 4, 120
    top = max((v for _, v in rows), default=0) or 1
    height = len(rows) * (bar_h + gap) + 30
    parts = [f'<svg class="{cls}" role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>']
    for i, (label, value) in enumerate(rows):
        y = 20 + i * (bar_h + gap)
        w = int((width - left - 60) * value / top)
        colour = "#c0392b" if label == mark else "#2c7fb8"
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" font-size="12">{html.escape(label)}</text>'
                     f'<rect class="bar" data-label="{html.escape(label)}" data-value="{value}" x="{left}" y="{y}" '
                     f'width="{w}" height="{bar_h}" fill="{colour}"/>'
                     f'<text x="{left + w + 4}" y="{y + 12}" font-size="12">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(reports: list[JailReport], out: IO[str]) -> None:
    out.write("<!DOCTYPE html><html><head><meta charset='utf-8'><title>mailban tuning report</title>"
              "<style>body{font-family:sans-serif;margin:2em;max-width:60em}h2{margin-top:2em}"
              "td,th{padding:0 1em 0 0;text-align:left}</style></head><body>"
              "<h1>mailban tuning report</h1><p>What each jail's thresholds would do on these logs. "
              "Red: the configured threshold.</p>")
    for r in reports:
        spec = r.spec
        acted = sum(1 for p in r.peaks.values() if p >= spec.maxretry)
        out.write(f"<section class='jail' id='jail-{html.escape(spec.name)}'><h2>jail {html.escape(spec.name)}</h2>"
                  f"<p>{html.escape(spec.describe())}</p><p>{len(r.peaks)} keys seen; "
                  f"<strong class='acted'>{acted}</strong> would be acted on.</p>")
        rows = [(str(t), n) for t, n in r.thresholds()]
        out.write("<h3>Keys acted on, per threshold</h3>")
        out.write(_svg_bars(rows, str(spec.maxretry), f"keys acted on per threshold, jail {spec.name}", "thresholds"))
        hist = r.histogram()
        if hist:
            out.write("<h3>Keys, per peak count within findtime</h3>")
            out.write(_svg_bars(hist, None, f"peak per key within findtime, jail {spec.name}", "peaks"))
        for title, rows2 in (("Top", r.top()), ("Near misses", r.near_misses()),
                             *((("Busiest under the threshold", r.busiest_under()),) if spec.key != "ip" else ())):
            if rows2:
                out.write(f"<h3>{title}</h3><table><tr><th>{spec.key}</th><th>peak</th></tr>"
                          + "".join(f"<tr><td>{html.escape(_safe(k))}</td><td>{p}</td></tr>" for k, p in rows2)
                          + "</table>")
        out.write("</section>")
    out.write("</body></html>\n")
