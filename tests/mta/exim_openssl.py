"""Exim 4.98.2 built from Exim's own source with OpenSSL 3, in a copy of Debian 12's Exim root:
the TLS lines of the Exims that cPanel, RHEL/EPEL, FreeBSD and source installs run (Debian's
Exim is built with GnuTLS, whose TLS lines differ: src/src/tls-openssl.c against tls-gnu.c).

A tool's root, like forky's and bullseye's (tests/mta/exim.py TESTING, OLDER): built only when
the suite is named (`python3 -m tests.mta.exim_breadth capture DIR openssl`); CI never builds it.

    python3 -m tests.mta.exim_openssl [SRCDIR]

builds it by hand. The source is a git tree of Exim (default $MAILBAN_EXIM_SRC, else the
mirror /work/.mirror/Exim+exim/repo, a bare clone of github.com/Exim/exim): `git archive
exim-4.98.2 src` into a build directory outside the repository (nothing of Exim's source is
kept in this one). The build runs on the host, which must be Debian 12 like the root (the
binary links the host's libssl3, libpcre2-8, libdb5.3, libcrypt1: the root has the same
packages), with libssl-dev, libpcre2-dev and libdb-dev (installed here if missing); the whole
build, make -j2 and the root's copy, took 40 s on two cores (2026-12-04). The binary goes to the
root's /usr/sbin/exim4, setuid root like Debian's, compiled with Debian's paths and user so that
the harness's configuration (/etc/exim4/exim4.conf) works unchanged. EDITME's defaults stay
(DKIM, DANE, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TAG = "exim-4.98.2"
VERSION = "4.98.2"
MIRROR = Path(os.environ.get("MAILBAN_EXIM_SRC", "/work/.mirror/Exim+exim/repo"))
DEV_PACKAGES = ("build-essential", "libssl-dev", "libpcre2-dev", "libdb-dev", "pkg-config")

# Local/Makefile: src/EDITME with these settings changed or uncommented (the rest is EDITME's
# default: DKIM, DANE, the usual routers and transports). Debian's paths, user and hints
# database (Berkeley DB 5.3), so the root's files and the harness's configuration fit.
SETTINGS = {
    "BIN_DIRECTORY": "/usr/sbin",
    "CONFIGURE_FILE": "/etc/exim4/exim4.conf",
    "EXIM_USER": "ref:Debian-exim",
    "SPOOL_DIRECTORY": "/var/spool/exim4",
    "LOG_FILE_PATH": "/var/log/exim4/%slog",
    "PID_FILE_PATH": "/run/exim4/exim.pid",
    "USE_OPENSSL": "yes",
    "TLS_LIBS": "-lssl -lcrypto",
    "USE_DB": "yes",
    "DBMLIB": "-ldb",
    "AUTH_PLAINTEXT": "yes",
    "AUTH_CRAM_MD5": "yes",
    "AUTH_DOVECOT": "yes",
    "HAVE_ICONV": "yes",
    "HAVE_IPV6": "yes",  # EDITME leaves it out: the harness listens on ::1 too
}


def local_makefile(editme: str) -> str:
    """EDITME with SETTINGS: each key's first line (set or commented out) becomes the setting;
    keys EDITME lacks are appended."""
    done: set[str] = set()
    out = []
    for line in editme.split("\n"):
        m = re.match(r"#?\s*([A-Z0-9_]+)\s*=", line)
        key = m.group(1) if m else ""
        if key in SETTINGS and key not in done:
            out.append(f"{key}={SETTINGS[key]}")
            done.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in SETTINGS.items() if k not in done]
    return "\n".join(out).rstrip("\n") + "\n"


def version_files(srcdir: Path) -> None:
    """What a release tarball carries and a git tree lacks (src/scripts/reversion writes them
    from `git describe`, which an archive has no history for)."""
    (srcdir / "src/version.sh").write_text(
        "# automatically generated file - see ../scripts/reversion\n"
        f'EXIM_RELEASE_VERSION="{VERSION}"\nEXIM_COMPILE_NUMBER="0"\n')
    (srcdir / "src/version.h").write_text(
        "/* automatically generated file - see ../scripts/reversion */\n"
        f'#define EXIM_RELEASE_VERSION "{VERSION}"\n'
        "#ifdef EXIM_VARIANT_VERSION\n#define EXIM_VERSION_STR EXIM_RELEASE_VERSION \"-\" EXIM_VARIANT_VERSION\n"
        "#else\n#define EXIM_VERSION_STR EXIM_RELEASE_VERSION\n#endif\n")


def build(workdir: Path) -> Path:
    """Exim's source at TAG into workdir, configured and compiled; the binary's path."""
    missing = [p for p in DEV_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q",
                        "--no-install-recommends", *missing], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    archive = subprocess.run(["git", "-C", str(MIRROR), "archive", TAG, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    src = workdir / "src"
    version_files(src)
    (src / "Local").mkdir(exist_ok=True)
    (src / "Local/Makefile").write_text(local_makefile((src / "src/EDITME").read_text()))
    done = subprocess.run(["make", "-j2"], cwd=src, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    return next(src.glob("build-Linux-*/exim"))


def ensure_openssl_root(root: Path) -> Path:
    """`root` (the cache's exim-openssl-root): a copy of Debian 12's light root with the OpenSSL
    build in place of /usr/sbin/exim4; built on first use."""
    from tests.mta.exim import ensure_root

    if (root / "usr/sbin/exim4").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(ensure_root("bookworm")), str(tmp)], check=True)
    with tempfile.TemporaryDirectory(prefix="eximssl-build-") as work:
        binary = build(Path(work))
        target = tmp / "usr/sbin/exim4"
        shutil.copy(binary, target)
        os.chown(target, 0, 0)
        target.chmod(0o4755)  # setuid root, as Debian installs it
    # every library the binary needs must be in the root already (Debian 12 on both sides)
    ldd = subprocess.run(["chroot", str(tmp), "ldd", "/usr/sbin/exim4"], capture_output=True, text=True)
    if ldd.returncode != 0 or "not found" in ldd.stdout:
        raise RuntimeError("the root lacks libraries for the OpenSSL build:\n" + ldd.stdout + ldd.stderr)
    version = subprocess.run(["chroot", str(tmp), "exim4", "-bV"], capture_output=True, text=True).stdout
    if "OpenSSL" not in version:
        raise RuntimeError("the built exim4 does not report OpenSSL:\n" + version)
    tmp.rename(root)
    return root


if __name__ == "__main__":
    from tests.mta.exim import root_of

    if len(sys.argv) > 1:
        MIRROR = Path(sys.argv[1])
    print(ensure_openssl_root(root_of("openssl")))
