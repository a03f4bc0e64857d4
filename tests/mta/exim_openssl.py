"""Exim 4.98.2 built from Exim's own source with OpenSSL, in a copy of a Debian root of
tests/mta/exim.py: the TLS lines of the Exims that cPanel, RHEL/EPEL, FreeBSD and source
installs run (Debian's Exim is built with GnuTLS, whose TLS lines differ: src/src/tls-openssl.c
against tls-gnu.c). Two builds (BASE): `openssl`, in Debian 12's root, links OpenSSL 3;
`openssl11`, in Debian 11's, links OpenSSL 1.1.1, the library of AlmaLinux/RHEL 8 (the most
common cPanel system) and Ubuntu 20.04, whose errors Exim words otherwise (a client that closes
in the handshake: `SSL_accept: TCP connection closed by peer`, not OpenSSL 3's `unexpected eof`).

Tools' roots, like forky's and bullseye's (tests/mta/exim.py TESTING, OLDER): built only when
the suite is named (`python3 -m tests.mta.exim_breadth capture DIR openssl11`); CI never builds them.

    python3 -m tests.mta.exim_openssl [openssl|openssl11] [SRCDIR]

builds one by hand. The source is a git tree of Exim (default $MAILBAN_EXIM_SRC, else the
mirror /work/.mirror/Exim+exim/repo, a bare clone of github.com/Exim/exim): `git archive
exim-4.98.2 src` into a throwaway copy of the base root (nothing of Exim's source is kept in
this repository). The build runs chrooted in that copy, with libssl-dev, libpcre2-dev and
libdb-dev installed there from the base release's packages, so the binary links that
release's libssl, libpcre2-8, libdb5.3 and libcrypt1, all in the base root already; the build
copy is removed afterwards (the whole build, packages and make -j2, took 42 s for either on two
cores, 2026-12-04). The binary goes to a fresh copy of the base root as /usr/sbin/exim4, setuid
root like Debian's, compiled with Debian's paths and user so that the harness's configuration
(/etc/exim4/exim4.conf) works unchanged. EDITME's defaults stay (DKIM, DANE, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TAG = "exim-4.98.2"
VERSION = "4.98.2"
MIRROR = Path(os.environ.get("MAILBAN_EXIM_SRC", "/work/.mirror/Exim+exim/repo"))
# libfile-fcntllock-perl: the build runs its exim_id_update script, which loads File::FcntlLock
DEV_PACKAGES = ("build-essential", "libssl-dev", "libpcre2-dev", "libdb-dev", "pkg-config", "libfile-fcntllock-perl")
# each built suite's base root (tests/mta/exim.py's suite whose libraries it links), and the
# OpenSSL `exim4 -d -bV` must report at run time: bookworm has 3.0.x, bullseye 1.1.1
BASE = {"openssl": "bookworm", "openssl11": "bullseye"}
RUNTIME = {"openssl": "Runtime: OpenSSL 3.", "openssl11": "Runtime: OpenSSL 1.1."}

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


def chroot(root: Path, script: str, timeout: int = 1800) -> None:
    """Run a bash script chrooted in `root` (with /proc, which apt and make want)."""
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        done = subprocess.run(["chroot", str(root), "bash", "-c", script], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
    if done.returncode != 0:
        raise RuntimeError(f"in {root}: {script}\n" + done.stdout[-3000:] + done.stderr[-3000:])


def build(buildroot: Path) -> Path:
    """Exim's source at TAG compiled in `buildroot` (a throwaway copy of a base root: the
    development packages go into it); the binary's path."""
    chroot(buildroot, "apt-get update -q && apt-get -o DPkg::Lock::Timeout=600 install -y -q "
           "--no-install-recommends " + " ".join(DEV_PACKAGES), timeout=900)
    archive = subprocess.run(["git", "-C", str(MIRROR), "archive", TAG, "src"], check=True,
                             capture_output=True).stdout
    work = buildroot / "root/exim-build"
    work.mkdir()
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    src = work / "src"
    version_files(src)
    (src / "Local").mkdir(exist_ok=True)
    (src / "Local/Makefile").write_text(local_makefile((src / "src/EDITME").read_text()))
    chroot(buildroot, "cd /root/exim-build/src && make -j2")
    return next(src.glob("build-Linux-*/exim"))


def ensure_openssl_root(suite: str, root: Path) -> Path:
    """`root` (the cache's exim-SUITE-root): a copy of BASE[suite]'s light root with the OpenSSL
    build in place of /usr/sbin/exim4; built on first use."""
    from tests.mta.exim import ensure_root

    if (root / "usr/sbin/exim4").exists():
        return root
    base = ensure_root(BASE[suite])
    tmp, buildroot = root.with_name(root.name + ".tmp"), root.with_name(root.name + ".build")
    for path in (tmp, buildroot):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["cp", "-a", str(base), str(path)], check=True)
    try:
        target = tmp / "usr/sbin/exim4"
        shutil.copy(build(buildroot), target)
        os.chown(target, 0, 0)
        target.chmod(0o4755)  # setuid root, as Debian installs it
    finally:
        shutil.rmtree(buildroot, ignore_errors=True)
    # every library the binary needs must be in the base root already (the build root had the same)
    ldd = subprocess.run(["chroot", str(tmp), "ldd", "/usr/sbin/exim4"], capture_output=True, text=True)
    if ldd.returncode != 0 or "not found" in ldd.stdout:
        raise RuntimeError("the root lacks libraries for the OpenSSL build:\n" + ldd.stdout + ldd.stderr)
    # -d: the library versions (-bV alone lists only "OpenSSL" among the features)
    version = subprocess.run(["chroot", str(tmp), "exim4", "-d", "-bV"], capture_output=True, text=True)
    if RUNTIME[suite] not in version.stdout + version.stderr:
        raise RuntimeError(f"the built exim4 does not report {RUNTIME[suite]!r}:\n" + version.stdout + version.stderr)
    tmp.rename(root)
    return root


if __name__ == "__main__":
    from tests.mta.exim import root_of

    name = sys.argv[1] if len(sys.argv) > 1 else "openssl"
    if len(sys.argv) > 2:
        MIRROR = Path(sys.argv[2])
    print(ensure_openssl_root(name, root_of(name)))
