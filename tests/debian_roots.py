"""Fresh Debian 12 and 13 roots for the package tests, from roots cached once per machine.

`ensure_root(name, release, packages)` builds /var/cache/mailban-test/pkg-<name> when it is
missing or was built with other packages: debootstrap --variant=minbase of `release` from the
machine's own Debian mirror (about 25 s), a policy-rc.d that starts no service, then `packages`
installed with apt (recipe: ../shared/REAL-MTA.md section 8). These roots are this test's own:
the trixie root of tests/mta/trixie.py is not touched. A root appears under its name only when
complete (built beside it, then renamed), under a lock, so concurrent runs do not collide.

`Fresh(root)` is a throwaway copy of a cached root: an overlay (the cached root read-only
below, an upper directory under /var/tmp on top) with /proc mounted, and the machine's apt
archive for that root (pkg-debs-<name>) bind-mounted on /var/cache/apt/archives so that the .debs a test
installs are downloaded once per machine. `close()` unmounts and deletes everything, so the next
test starts from the cached root exactly as built. No shell is used.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.mta import debian_mirror

CACHE = Path(os.environ.get("MAILBAN_PKG_ROOTS", "/var/cache/mailban-test"))
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8",
       "HOME": "/root"}
_counter = itertools.count()


def run(argv: list[str], timeout: float = 300, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", ENV), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ensure_root(name: str, release: str, packages: list[str]) -> Path:
    """The cached root pkg-<name> with `packages` installed (built now when missing)."""
    root = CACHE / f"pkg-{name}"
    stamp = " ".join([release, *sorted(packages)])
    marker = root / ".mailban-root"
    if marker.exists() and marker.read_text() == stamp:
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == stamp:
            return root
        if shutil.which("debootstrap") is None:
            run(APT + ["install", "--no-install-recommends", "debootstrap"], timeout=600)
        tmp = Path(f"{root}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.monotonic()
        try:
            run(["debootstrap", "--variant=minbase", release, str(tmp), debian_mirror()], timeout=900)
            (tmp / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
            (tmp / "usr/sbin/policy-rc.d").chmod(0o755)
            with Fresh(tmp, release, overlay=False) as fresh:
                fresh.run(APT + ["update"], timeout=600)
                if packages:
                    fresh.run(APT + ["install", "--no-install-recommends", *packages], timeout=1200)
            (tmp / ".mailban-root").write_text(stamp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        print(f"built {root} in {time.monotonic() - started:.0f} s")
    return root


class Fresh:
    """A throwaway root on top of a cached one (or, overlay=False, the directory itself)."""

    def __init__(self, lower: Path, release: str, overlay: bool = True) -> None:
        self.release = release
        name = lower.name.split(".tmp-")[0]  # pkg-<name>: its own apt archive (apt locks it)
        self.mounts: list[Path] = []
        self.scratch: Path | None = None
        if overlay:
            self.scratch = Path(f"/var/tmp/mailban-pkg-{os.getpid()}-{next(_counter)}")
            shutil.rmtree(self.scratch, ignore_errors=True)
            for sub in ("upper", "work", "root"):
                (self.scratch / sub).mkdir(parents=True)
            self.root = self.scratch / "root"
            self._mount(["mount", "-t", "overlay", "overlay", "-o",
                         f"lowerdir={lower},upperdir={self.scratch / 'upper'},workdir={self.scratch / 'work'}",
                         str(self.root)], self.root)
        else:
            self.root = lower
        try:
            self._mount(["mount", "-t", "proc", "proc", str(self.root / "proc")], self.root / "proc")
            archives = CACHE / name.replace("pkg-", "pkg-debs-", 1)
            (archives / "partial").mkdir(parents=True, exist_ok=True)
            self._mount(["mount", "--bind", str(archives), str(self.root / "var/cache/apt/archives")],
                        self.root / "var/cache/apt/archives")
        except BaseException:
            self.close()
            raise

    def _mount(self, argv: list[str], target: Path) -> None:
        run(argv, timeout=30)
        self.mounts.append(target)

    def __enter__(self) -> Fresh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, argv: list[str]) -> list[str]:
        return ["chroot", str(self.root), *argv]

    def run(self, argv: list[str], timeout: float = 300, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), timeout=timeout, check=check, **kw)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def files(self) -> set[str]:
        """Every path in the root, relative, except the mounted /proc and apt's archive."""
        skip = {self.root / "proc", self.root / "var/cache/apt/archives", self.root / "dev"}
        found: set[str] = set()
        for top, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if Path(top, d) not in skip]
            for entry in dirs + names:
                found.add("/" + str(Path(top, entry).relative_to(self.root)))
        return found

    def close(self) -> None:
        for target in reversed(self.mounts):
            if run(["umount", str(target)], check=False, timeout=30).returncode != 0:
                run(["umount", "-l", str(target)], check=False, timeout=30)
        self.mounts.clear()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
