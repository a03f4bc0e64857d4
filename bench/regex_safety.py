"""Admin-written patterns must not hang the daemon: the figures behind the chosen mechanism.

    python bench/regex_safety.py                 # Python's re, the load-time check
    PYTHONPATH=/path/to/site-packages-with-google-re2 python bench/regex_safety.py   # + RE2

1. Known catastrophic patterns against the lines that make a backtracking engine explode:
   seconds per input length with Python's `re` (stopped past 1 s), and with RE2 when importable.
2. The same patterns in an admin's filter file: what `config.load` answers (file:line:column).
3. The shipped rules under RE2: which it refuses to compile, and compile and match cost of
   every rule on a mixed log (bench/genlog.py) with `re` and with RE2.
4. The shipped filters on adversarial lines as long as the tail hands out (256 KB): worst time.
Prints a report; nothing is asserted (tests/test_hostile_input.py holds the assertions).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from mailban import config  # noqa: E402
from mailban.core.errors import ConfigError  # noqa: E402
from mailban.core.syslog import SyslogParser  # noqa: E402
from tests.filter_samples import NOW, all_filters  # noqa: E402
from tests.test_hostile_input import adversarial_lines  # noqa: E402

try:
    import re2  # type: ignore[import-not-found]
except ImportError:
    re2 = None

CASES = [  # pattern, input of length n that almost matches
    (r"(a+)+$", lambda n: "a" * n + "!"),
    (r"(a|aa)+$", lambda n: "a" * n + "!"),
    (r"(.*a){20}", lambda n: "a" * 19 + "b" * n),
    (r"(a?){n}a{n}", lambda n: "a" * n),
    (r"(?:\w+\s?)+$", lambda n: "ab " * (n // 3) + "!"),
]


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def catastrophic() -> None:
    print("## 1. catastrophic patterns (seconds for one failing match)")
    for pattern, make in CASES:
        regex = re.compile(pattern) if "{n}" not in pattern else None
        row = []
        n = 12
        while n <= 4096:
            rx = regex or re.compile(pattern.replace("{n}", f"{{{n}}}"))
            took = timed(rx.match, make(n))
            row.append(f"n={n}: {took:.3g}s")
            if took > 1.0:
                break
            n = n + 2 if n < 40 else n * 2
        line = f"re   {pattern:18s} " + ", ".join(row[-4:])
        print(line)
        if re2 is not None:
            big = make(1_000_000 if "{n}" not in pattern else 30)
            r = re2.compile(pattern.replace("{n}", f"{{{len(big)}}}"))
            print(f"re2  {pattern:18s} n={len(big)}: {timed(r.match, big):.3g}s")


def refused() -> None:
    print("\n## 2. the same patterns in /etc/mailban/filters.d/admin.toml")
    for pattern, _make in CASES:
        pattern = pattern.replace("{n}", "{25}")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "filters.d").mkdir()
            (root / "filters.d" / "admin.toml").write_text(
                '[filter]\nprograms = ["postfix/smtpd"]\n\n[[rule]]\nid = "slow"\nkind = "auth-failure"\n'
                f"pattern = '<CLIENT>: {pattern}'\n")
            (root / "mailban.toml").write_text("[mailban]\n")
            started = time.perf_counter()
            try:
                config.load(str(root / "mailban.toml"))
                print(f"{pattern:18s} ACCEPTED")
            except ConfigError as exc:
                took = time.perf_counter() - started
                print(f"{pattern:18s} refused in {took * 1000:.0f} ms: admin.toml:{exc.line}:{exc.column}: "
                      f"{exc.message[:90]}...")


def shipped(lines: int) -> None:
    print("\n## 3. shipped rules: RE2 compatibility and cost")
    fset = all_filters()
    rules = [(f"{f.name}.{r.id}", r.pattern.regex) for f in fset.filters for r in f.rules]
    started = time.perf_counter()
    for _name, regex in rules:
        re.compile(regex.pattern, re.DOTALL | re.NOFLAG if hasattr(re, "NOFLAG") else re.DOTALL)
        re.purge()
    re_compile = time.perf_counter() - started
    print(f"{len(rules)} rules; re compile (cache purged): {re_compile * 1000:.1f} ms")
    if re2 is None:
        print("RE2 not importable: install google-re2 somewhere and put it on PYTHONPATH")
        return
    compiled = []
    refusals = []
    options = re2.Options()
    options.dot_nl = True
    started = time.perf_counter()
    for name, regex in rules:
        try:
            compiled.append((name, re2.compile(regex.pattern, options), regex))
        except Exception as exc:
            refusals.append((name, str(exc).splitlines()[0][:80]))
    re2_compile = time.perf_counter() - started
    print(f"re2 compile: {re2_compile * 1000:.1f} ms; refused {len(refusals)} of {len(rules)}:")
    for name, why in refusals:
        print(f"   {name}: {why}")
    import genlog  # type: ignore[import-not-found]

    with tempfile.NamedTemporaryFile(suffix=".log") as fh:
        genlog.main(["--lines", str(lines), "--seed", "1", "-o", fh.name])
        data = Path(fh.name).read_bytes().split(b"\n")
    parser = SyslogParser(NOW)
    parsed = [(raw, parser.parse(raw)) for raw in data if raw]
    parsed = [(raw, h.msg_start) for raw, h in parsed if h is not None]
    for label, engine in (("re", [(n, r) for n, _x, r in compiled]), ("re2", [(n, r2) for n, r2, _x in compiled])):
        started = time.perf_counter()
        hits = 0
        for raw, start in parsed:
            for _name, regex in engine:
                if regex.match(raw, start) is not None:
                    hits += 1
        took = time.perf_counter() - started
        print(f"{label:4s}: {len(parsed)} lines x {len(engine)} rules (every rule on every line, no dispatch): "
              f"{took:.2f}s, {len(parsed) / took:,.0f} lines/s, {hits} matches")


def adversarial() -> None:
    print("\n## 4. shipped filters on adversarial lines")
    fset = all_filters()
    parser = SyslogParser(NOW)
    for size in (8 * 1024, 64 * 1024, 256 * 1024):
        worst, which = 0.0, b""
        for raw in adversarial_lines(size):
            header = parser.parse(raw)
            took = timed(fset.match, raw, header)
            if took > worst:
                worst, which = took, raw
        print(f"{size // 1024:4d} KB lines: worst {worst * 1000:.1f} ms ({which[21:70]!r}...)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=50_000, help="mixed-log lines for the RE2 match comparison")
    args = ap.parse_args(argv)
    catastrophic()
    refused()
    shipped(args.lines)
    adversarial()
    return 0


if __name__ == "__main__":
    sys.exit(main())
