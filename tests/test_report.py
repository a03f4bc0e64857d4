"""`mailban replay --report`: the tuning report on generated traffic, as text and as an HTML page
that a real browser (headless Chromium) renders with its plots."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailban import config
from mailban.offline import report
from tests.logsynth import T0, Log

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = Log(seed=5)
    for n in range(40):  # 40 addresses with 1..40 failures each, in 10 minutes
        for k in range(n + 1):
            log.sasl_failure(T0 + k * (500.0 / (n + 1)), f"u{n}@example.test", f"198.51.100.{n + 1}")
    for u in range(50):  # ordinary senders, and one busy account under the outbound threshold
        log.authenticated_message(T0 + u, f"user{u}@example.test", "203.0.113.5")
    for i in range(150):
        log.authenticated_message(T0 + i * 20.0, "newsletter@example.test", "203.0.113.6")
    path = tmp_path_factory.mktemp("report") / "mail.log"
    path.write_text(log.text())
    return path


def test_peaks_thresholds_and_near_misses(traffic: Path) -> None:
    cfg = config.load(str(config.SHIPPED_DEFAULT))
    reports = {r.spec.name: r for r in report.build(cfg, report.events_from(cfg, [str(traffic)]))}
    abuse = reports["mail-abuse"]
    assert abuse.peaks["198.51.100.40"] == 40 and abuse.peaks["198.51.100.1"] == 1
    assert dict(abuse.thresholds())[5] == 36          # addresses with 5 or more failures
    assert [p for _, p in abuse.near_misses()] == [4, 3]  # 60-99% of 5
    out = reports["outbound-user"]
    assert out.busiest_under()[0] == ("newsletter@example.test", 150)
    assert dict(out.thresholds())[200] == 0


def test_counts_what_the_jail_counts_ignore_lists_included(traffic: Path, tmp_path: Path) -> None:
    """The report selects with the jail's own counted_key: an address the configuration ignores
    is never a peak, as the daemon never counts it (the report used to show it)."""
    conf = tmp_path / "mailban.toml"
    conf.write_text(config.SHIPPED_DEFAULT.read_text().replace(
        "\nignoreip = []\n", '\nignoreip = ["198.51.100.40/32"]\n', 1))
    cfg = config.load(str(conf))
    abuse = {r.spec.name: r for r in report.build(cfg, report.events_from(cfg, [str(traffic)]))}["mail-abuse"]
    assert "198.51.100.40" not in abuse.peaks and abuse.peaks["198.51.100.39"] == 39


def test_cli_text_and_html(traffic: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "mailban", "replay", "--report", "--html", str(page),
                           "--config", str(config.SHIPPED_DEFAULT), str(traffic)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "== jail mail-abuse: 40 ips seen; at maxretry 5 (points within 10m) 36 would be acted on" in proc.stdout
    assert "<- configured" in proc.stdout and "newsletter@example.test (150)" in proc.stdout
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_report_renders_in_headless_chromium(traffic: Path, tmp_path: Path) -> None:
    cfg = config.load(str(config.SHIPPED_DEFAULT))
    page = tmp_path / "report.html"
    with open(page, "w") as fh:
        report.render_html(report.build(cfg, report.events_from(cfg, [str(traffic)])), fh)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    # the browser parsed the page: one section per jail, and the bars carry the report's figures
    assert len(re.findall(r"<section class=\"jail\"", dom)) == len([j for j in cfg.jails if j.enabled])
    bars = dict(re.findall(r'<rect class="bar" data-label="(\d+)" data-value="(\d+)"', dom.split('id="jail-mail-abuse"')[1]))
    assert bars["5"] == "36"
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000  # a real picture, not a blank page
