"""The C module under AddressSanitizer and UBSan, fed mutated log lines.

    python bench/fuzz_c.py [--lines 300000] [--seeds 1,2,3]

mailban/core/_speedups.c reads every log line the daemon sees, attacker text included; a read past
a buffer there would crash the daemon (or worse) instead of dropping a garbage line. This copies
the tree (`git archive HEAD`) into a temporary directory, builds the module there with
`-fsanitize=address,undefined`, writes mutated lines (the shipped samples tests/filters/*.log and
genlog.py's postfix and Exim logs, each cut, spliced, byte-flipped, given brackets, quotes,
backslashes, field names, NULs, invalid UTF-8 and runs of thousands of bytes, plus one 2 MB
line), and runs `mailban test --jobs 1` (the tally loop), `test --json` (the events loop) and
`replay` (batch matching and correlation) on them with the sanitizers preloaded. Any report
stops the run with the sanitizer's stack and a non-zero exit. Needs gcc; about a minute a seed.
Not a unit test: the sanitizers make Python 3-5x slower.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
TOKENS = [b"[", b"]", b":", b"=", b" ", b"<", b">", b'"', b"\\", b"(", b")", b"H=", b" A=", b" U=", b" P=",
          b" S=", b"<=", b"=>", b"[1.2.3.4]:25", b"[::1]", b"\x00", b"\xff\xfe", b"\xc3", b"-", b"1rKx2p-0004Ab-1F",
          b"1rKx2p-0004Ab-1F-", b"x" * 5000, b"[" * 300, b"%", b"\t", b"\r", b"Completed", b"authenticator failed for ",
          b"client=", b"sasl_username=", b"postfix/smtpd[1]: ", b"dovecot: imap-login: ", b"rip=", b"from=<"]


def sources(scratch: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted((TREE / "tests" / "filters").glob("*.log")):
        lines += [line for line in path.read_bytes().splitlines() if line.strip() and not line.startswith(b"#")]
    for mta in ("postfix", "exim"):
        log = scratch / f"{mta}.log"
        subprocess.run([sys.executable, str(HERE / "genlog.py"), "--lines", "20000", "--mta", mta, "-o", str(log)],
                       check=True)
        lines += log.read_bytes().splitlines()
    return lines


def mutated(src: list[bytes], n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        line = bytearray(rng.choice(src))
        for _ in range(rng.randrange(1, 6)):
            op, pos = rng.randrange(6), rng.randrange(len(line) + 1)
            if op == 0 and line:
                line[min(pos, len(line) - 1)] = rng.randrange(256)
            elif op == 1:
                line[pos:pos] = rng.choice(TOKENS)
            elif op == 2:
                del line[pos:pos + rng.randrange(1, 40)]
            elif op == 3:
                del line[pos:]
            elif op == 4:
                other = rng.choice(src)
                line[pos:] = other[rng.randrange(len(other) + 1):]
            else:
                line[pos:pos] = line[pos:pos + rng.randrange(1, 200)] * rng.randrange(1, 4)
        out.append(bytes(line).replace(b"\n", b" "))
    out.append(b"x" * 2_000_000)
    return b"\n".join(out) + b"\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--seeds", default="1,2,3")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailban-fuzz-c-") as tmp:
        scratch = Path(tmp)
        tree = scratch / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(TREE), "archive", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        module = tree / "mailban" / "core" / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
        subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fPIC",
                        "-shared", f"-I{sysconfig.get_paths()['include']}", str(tree / "mailban/core/_speedups.c"),
                        "-o", str(module)], check=True)
        libs = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=True)
                .stdout.strip() for lib in ("libasan.so", "libubsan.so")]
        env = dict(os.environ, LD_PRELOAD=" ".join(libs), ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1", PYTHONPATH=str(tree))
        src = sources(scratch)
        for seed in (int(s) for s in args.seeds.split(",")):
            log = scratch / f"fuzz-{seed}.log"
            log.write_bytes(mutated(src, args.lines, seed))
            for command in (["test", "--jobs", "1"], ["test", "--json", "--jobs", "1"], ["replay"]):
                done = subprocess.run([sys.executable, "-m", "mailban", *command, str(log)], cwd=tree, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                # `test` exits 1 when lines matched no rule; a sanitizer aborts (SIGABRT) or halts
                if done.returncode not in (0, 1) or "Sanitizer" in done.stderr or "runtime error" in done.stderr:
                    print(done.stderr[-6000:])
                    print(f"seed {seed}, mailban {' '.join(command)}: exit {done.returncode}")
                    return 1
                print(f"seed {seed}: {args.lines:,} mutated lines, mailban {' '.join(command)}: clean", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
