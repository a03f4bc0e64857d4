"""Real Exim (Debian 12's 4.96 and Debian 13's 4.98; as a tool, Debian testing's 4.100.1,
Debian 11's 4.94.2 and 4.98.2 built with OpenSSL) provoked on loopback: the capture behind
tests/filters/exim-*.log.

Re-run (as root, on a test machine; about 2 minutes, most of it the first build of the roots):

    python3 -m tests.mta.exim capture OUTDIR [bookworm|trixie|forky|bullseye|openssl|openssl11 ...]

forky (testing: TESTING below) and bullseye (OLDER) are captured only when named, and no test
starts them: a testing suite moves, so a later machine would build another Exim
(tests/filters/exim-4100.log and exim4100-captured-*.log are its captures of 2026-12-03), and
bullseye's root is for the older Exims other hosts run (exim-494.log, exim494-captured-*.log:
captured 2026-12-04; 4.94 accepts this module's CONFIG unchanged). `openssl` (BUILT) is no
Debian package: Exim 4.98.2 built from Exim's source with OpenSSL 3 in a copy of bookworm's root
(tests/mta/exim_openssl.py), for the TLS lines of OpenSSL builds; `openssl11` the same with
OpenSSL 1.1.1 in a copy of bullseye's; also only when named.

For each Debian release it builds (once, then cached) a debootstrapped root with
exim4-daemon-light in /var/cache/mailban-test/exim-<suite>-root (exim4-daemon-light conflicts
with the host's postfix, so it lives in a root of its own; recipe: /work/shared/REAL-MTA.md
section 8; $MAILBAN_EXIM_ROOTS moves the cache). The cached root is never written: each run
mounts an overlay on it under /var/lib/mbmta/exim-*. Exim runs chrooted in the overlay, inside a
network namespace that has only `lo` (no DNS: the root's resolv.conf names 127.0.0.1, where
nothing answers), as `exim4 -bdf -oX 2525`. The configuration is written to the overlay's
/etc/exim4/exim4.conf (CONFIG below), which Debian's exim4 reads before its generated one.
A host rsyslogd listens on the overlay's /dev/log and writes what Exim sends to syslog in the
traditional file format (`Dec  3 13:05:53 mx exim[123]: ...`).

Two runs per release, each with every category below, each client from its own 127.0.0.N:
- `default`: Debian's default log_selector; `log_file_path = /var/log/exim4/%slog : syslog`
  (mainlog, rejectlog and syslog see the same lines);
- `selectors`: `log_selector = +pid +millisec +smtp_connection +incoming_interface +incoming_port
  +outgoing_port +all_parents +smtp_protocol_error +smtp_syntax_error +smtp_no_mail
  +smtp_incomplete_transaction`, `log_timezone = true`, and to syslog with `syslog_timestamp =
  false`.

Categories (address: what it does): .10 AUTH PLAIN wrong password twice; .11 AUTH LOGIN wrong;
.12 AUTH PLAIN right, then a message to a local user and one to a remote domain (deferred: the
smarthost 127.0.0.1:2599 refuses); .13 relay denied; .14 unknown local user; .15 EHLO refused by
acl_smtp_helo; .16 talks before the banner; .17 pipelines where PIPELINING is not advertised;
.18 SMTP syntax error (MAIL FROM without <>); .19 too many nonmail commands (NOOPs,
smtp_accept_max_nonmail = 3 for it); .20 too many syntax or protocol errors (RCPT before MAIL);
.21 too many unrecognized commands; .22 command timeout (smtp_receive_timeout = 2s); .23 message
refused by acl_smtp_data; .24 ACL ratelimit (`ratelimit = 2 / 1h / per_rcpt / strict`, with a
log_message); .25 sender verify failure (`verify = sender`); .26 drops the connection after EHLO;
.27 AUTH with a password exim cannot decode (invalid base64) and an AUTH cancelled; .28 relay
denied again (meant to come from a client with a reverse name, but the chroot's /etc/hosts entry
was not used: Exim logged no name); .29 AUTH PLAIN wrong from ::1; .30 AUTH with a user
name that forges `[6.6.6.6]:25`; .31 EHLO [6.6.6.6] then relay denied; .32 a plain inbound
message to a local user; a local submission (`exim4 -odi` as uid 65534, `nobody`).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.mta import debian_mirror, in_netns
from tests.mta.clients import connect, converse, read_reply

CACHE = Path(os.environ.get("MAILBAN_EXIM_ROOTS", "/var/cache/mailban-test"))
SUITES = {"bookworm": "4.96", "trixie": "4.98"}
# Debian testing (forky: Exim 4.100.x as of December 2026). Not in SUITES: a testing suite moves,
# so the CI suite never starts it; the captures from it are a tool's (`capture DIR forky`).
TESTING = {"forky": "4.100"}
# Debian 11 (bullseye: Exim 4.94.2), for the older Exims other hosts still run. Not in SUITES
# either: the CI suite never builds its root; captured only when named (`capture DIR bullseye`).
OLDER = {"bullseye": "4.94"}
# Exim built from its own source with OpenSSL (tests/mta/exim_openssl.py: BASE, the root each is
# built in): 3 in Debian 12's root, 1.1.1 in Debian 11's; the TLS lines of the OpenSSL builds
# other hosts run. Tools' roots too, built only when named.
BUILT = {"openssl": "4.98", "openssl11": "4.98"}
RELEASES = {**SUITES, **TESTING, **OLDER, **BUILT}
PORT = 2525
_counter = itertools.count()


def root_of(suite: str) -> Path:
    return CACHE / f"exim-{suite}-root"


def ensure_root(suite: str) -> Path:
    """The cached root with exim4-daemon-light for `suite`, built on first use (about 60 s)."""
    root = root_of(suite)
    if (root / "usr/sbin/exim4").exists():
        return root
    if suite in BUILT:
        from tests.mta.exim_openssl import ensure_openssl_root  # it copies a root of this module

        return ensure_openssl_root(suite, root)
    if not shutil.which("debootstrap"):
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "debootstrap"],
                       check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # Debian 12's debootstrap has no script for releases after trixie: a testing suite takes
    # sid's (it has bullseye's, and the stable suites')
    script = ["/usr/share/debootstrap/scripts/sid"] if suite in TESTING else []
    subprocess.run(["debootstrap", "--variant=minbase", suite, str(tmp), debian_mirror(), *script], check=True,
                   capture_output=True, timeout=900)
    rc = tmp / "usr/sbin/policy-rc.d"
    rc.write_text("#!/bin/sh\nexit 101\n")
    rc.chmod(0o755)
    # A testing suite's Release file expires within days (Valid-Until); a mirror that syncs
    # less often, or a root built from an older snapshot, would refuse it: the tool's root does
    # not need the freshness guarantee (stable suites carry no Valid-Until).
    fresh = "-o Acquire::Check-Valid-Until=false " if suite in TESTING else ""
    subprocess.run(["chroot", str(tmp), "bash", "-c",
                    f"export DEBIAN_FRONTEND=noninteractive; apt-get {fresh}update -q && "
                    "apt-get install -y -q --no-install-recommends exim4-daemon-light"],
                   check=True, capture_output=True, timeout=900)
    make_tmpfiles_dirs(tmp)
    tmp.rename(root)
    return root


def make_tmpfiles_dirs(root: Path) -> None:
    """The directories exim4-base leaves to systemd-tmpfiles since Debian forky (/var/log/exim4,
    /run/exim4, the spool's): no systemd runs here, so make its `d` lines in the root."""
    conf = root / "usr/lib/tmpfiles.d/exim4-base.conf"
    if not conf.exists():
        return  # bookworm and trixie: the package's postinst made them
    for line in conf.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == "d":
            path, mode, user, group = fields[1:5]
            subprocess.run(["chroot", str(root), "install", "-d", "-m", mode, "-o", user, "-g", group, path],
                           check=True, capture_output=True)


CONFIG = r"""
primary_hostname = mx.example.test
domainlist local_domains = mx.example.test : example.test
local_interfaces = <; 127.0.0.1 ; ::1
spool_directory = /var/spool/exim4
log_file_path = {log_file_path}
{log_extra}
exim_user = Debian-exim
exim_group = Debian-exim
never_users = root
host_lookup = *
host_lookup_order = byaddr
pipelining_connect_advertise_hosts =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
auth_advertise_hosts = *
pipelining_advertise_hosts = !127.0.0.17
smtp_accept_max_nonmail = 3
smtp_accept_max_nonmail_hosts = 127.0.0.19
smtp_max_synprot_errors = 3
smtp_max_unknown_commands = 3
smtp_receive_timeout = 2s
ignore_bounce_errors_after = 0s
timeout_frozen_after = 1d
acl_smtp_helo = acl_helo
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl
acl_helo:
  deny    condition = ${{if eq{{$sender_helo_name}}{{bad.helo.example}}}}
          message = HELO/EHLO refused: bad name
  accept

acl_rcpt:
  accept  hosts = :
  deny    hosts = 127.0.0.24
          ratelimit = 2 / 1h / per_rcpt / strict / $sender_host_address
          message = Too many recipients, slow down
          log_message = RATELIMIT: $sender_host_address sent $sender_rate recipients per $sender_rate_period (limit $sender_rate_limit)
  deny    hosts = 127.0.0.25
          !verify = sender
  accept  authenticated = *
  deny    message = relay not permitted
          !domains = +local_domains
  require message = Unknown user
          verify = recipient
  accept

acl_data:
  deny    condition = ${{if def:h_X-Mailban-Test:{{true}}{{false}}}}
          message = Message refused: content policy
  accept

begin routers
smarthost:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = * 127.0.0.1::2599
  self = send
  no_more
gone:
  driver = redirect
  domains = +local_domains
  local_parts = gone
  data = :fail: mailbox gone
  allow_fail
local_user:
  driver = accept
  domains = +local_domains
  local_parts = alice : bob : postmaster
  transport = devnull

begin transports
remote_smtp:
  driver = smtp
  hosts_try_fastopen = :
devnull:
  driver = appendfile
  file = /dev/null
  user = Debian-exim
  batch_max = 10

begin retry
*  *  F,1h,15m

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${{if and {{{{eq{{$auth2}}{{alice@example.test}}}}{{eq{{$auth3}}{{S3cret-alice}}}}}}}}
  server_set_id = $auth2
login_server:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = ${{if and {{{{eq{{$auth1}}{{alice@example.test}}}}{{eq{{$auth2}}{{S3cret-alice}}}}}}}}
  server_set_id = $auth1
"""

RUNS = {
    "default": ("/var/log/exim4/%slog : syslog", ""),
    "selectors": ("/var/log/exim4/%slog : syslog",
                  "log_selector = +pid +millisec +smtp_connection +incoming_interface +incoming_port "
                  "+outgoing_port +all_parents +smtp_protocol_error +smtp_syntax_error +smtp_no_mail "
                  "+smtp_incomplete_transaction\nlog_timezone = true\nsyslog_timestamp = false"),
    # the outbound capture (capture-outbound): recipients and subjects on arrival lines
    "outbound": ("/var/log/exim4/%slog : syslog", "log_selector = +received_recipients +subject +pid"),
}

RSYSLOG = """module(load="imuxsock" SysSock.Name="{sock}" SysSock.RateLimit.Interval="0")
$template Trad,"%TIMESTAMP% mx %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n"
*.*\t{out};Trad
"""


class Exim:
    """One exim daemon in an overlay of the cached root, in a network namespace of its own."""

    def __init__(self, suite: str, run: str, config: str | None = None, netns: str | None = None) -> None:
        """`config`: the whole exim4.conf (default: CONFIG with the run's log settings);
        `netns`: an existing network namespace to run in (default: one of its own, with `lo` only)."""
        self.suite, self.run = suite, run
        self.config = config
        self.own_netns = netns is None
        self.lower = ensure_root(suite)
        self.work = Path(f"/var/lib/mbmta/exim-{os.getpid()}-{next(_counter)}")
        self.root = self.work / "root"
        self.netns = netns or f"mbexim-{os.getpid()}-{next(_counter)}"
        self.mainlog = self.root / "var/log/exim4/mainlog"
        self.rejectlog = self.root / "var/log/exim4/rejectlog"
        self.syslog = self.work / "syslog.log"
        self.mounted: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.version = ""
        self.ports = str(PORT)  # -oX: the daemon's ports (a colon list: tests/mta/exim_breadth.py adds 2465)

    def start(self) -> None:
        upper, wk = self.work / "upper", self.work / "ovl"
        for d in (upper, wk, self.root):
            d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={upper},workdir={wk}", str(self.root)], check=True)
        self.mounted.append(self.root)
        subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
        self.mounted.append(self.root / "proc")
        r = self.root
        (r / "etc/resolv.conf").unlink(missing_ok=True)
        (r / "etc/resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (r / "etc/hosts").write_text("127.0.0.1 localhost mx.example.test\n::1 localhost6\n"
                                     "127.0.0.28 named.example.test\n")
        (r / "etc/mailname").write_text("mx.example.test\n")
        log_file_path, extra = RUNS[self.run]
        (r / "etc/exim4/exim4.conf").write_text(self.config if self.config is not None
                                                else CONFIG.format(log_file_path=log_file_path, log_extra=extra))
        for f in ("mainlog", "rejectlog", "paniclog"):
            (r / "var/log/exim4" / f).unlink(missing_ok=True)
        shutil.rmtree(r / "var/spool/exim4/input", ignore_errors=True)
        shutil.rmtree(r / "var/spool/exim4/db", ignore_errors=True)
        conf = self.work / "rsyslog.conf"
        conf.write_text(RSYSLOG.format(sock=r / "dev/log", out=self.syslog))
        self.procs.append(subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(self.work / "rsyslog.pid")]))
        if self.own_netns:
            subprocess.run(["ip", "netns", "add", self.netns], check=True)
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self.version = subprocess.run(["chroot", str(r), "exim4", "-bV"], capture_output=True,
                                      text=True).stdout.split("\n")[0]
        check = subprocess.run(["chroot", str(r), "exim4", "-bV"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(check.stdout + check.stderr)
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.netns, "chroot", str(r), "exim4",
                                            "-bdf", "-oX", self.ports]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.inside():
                try:
                    socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.1)
        raise RuntimeError("exim did not start listening")

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """Run the block's socket calls (and programs it starts) in the namespace."""
        return in_netns(self.netns)

    def submit_local(self) -> None:
        """A local submission as uid 65534 (`U=nobody P=local`): what PHP mail() does."""
        msg = b"Subject: local\n\nhello from a web script\n"
        subprocess.run(["ip", "netns", "exec", self.netns, "chroot", "--userspec=65534:65534", str(self.root),
                        "/usr/sbin/exim4", "-odi", "alice@mx.example.test"],
                       input=msg, check=False, timeout=30)

    def submit_local_outbound(self) -> None:
        """sendmail(1) as uid 65534 with a sender and a subject of its choosing (the hacked web
        application): one recipient delivered, one bounced (`gone`, a :fail: redirect)."""
        msg = (b"From: \"x U=root P=local\" <www@mx.example.test>\n"
               b"Subject: forged U=root A=plain_server:mallory [6.6.6.6]\n\nhello\n")
        subprocess.run(["ip", "netns", "exec", self.netns, "chroot", "--userspec=65534:65534", str(self.root),
                        "/usr/sbin/sendmail", "-odi", "-F", "x U=root P=local",
                        "alice@mx.example.test", "gone@mx.example.test"],
                       input=msg, check=False, timeout=30)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.own_netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False)
        for m in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(m)], check=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def traffic(host: str = "127.0.0.1", port: int = PORT) -> None:
    """Every category of the module doc, in order, each from its own address."""
    plain = lambda u, p: b"AUTH PLAIN " + base64.b64encode(b"\0" + u.encode() + b"\0" + p.encode()) + b"\r\n"  # noqa: E731
    # .10 AUTH PLAIN wrong, twice; .11 AUTH LOGIN wrong
    converse(host, port, "127.0.0.10", [b"EHLO client.example.test\r\n", plain("alice@example.test", "wrong1"),
                                        plain("alice@example.test", "wrong2"), b"QUIT\r\n"])
    converse(host, port, "127.0.0.11", [b"EHLO client.example.test\r\n", b"AUTH LOGIN\r\n",
                                        _b64("alice@example.test") + b"\r\n", _b64("wrong3") + b"\r\n", b"QUIT\r\n"])
    # .12 a good login and two messages (local, remote)
    body = b"Subject: hello\r\n\r\nhello\r\n.\r\n"
    converse(host, port, "127.0.0.12", [
        b"EHLO client.example.test\r\n", plain("alice@example.test", "S3cret-alice"),
        b"MAIL FROM:<alice@example.test>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n", b"DATA\r\n", body,
        b"MAIL FROM:<alice@example.test>\r\n", b"RCPT TO:<friend@remote.example.net>\r\n",
        b"RCPT TO:<other@remote2.example.org>\r\n", b"DATA\r\n", body, b"QUIT\r\n"])
    # .13 relay denied; .14 unknown user; .15 EHLO refused
    converse(host, port, "127.0.0.13", [b"EHLO client.example.test\r\n", b"MAIL FROM:<spam@spammer.example>\r\n",
                                        b"RCPT TO:<victim@remote.example.net>\r\n", b"QUIT\r\n"])
    converse(host, port, "127.0.0.14", [b"EHLO client.example.test\r\n", b"MAIL FROM:<spam@spammer.example>\r\n",
                                        b"RCPT TO:<nosuchuser@mx.example.test>\r\n", b"QUIT\r\n"])
    converse(host, port, "127.0.0.15", [b"EHLO bad.helo.example\r\n", b"QUIT\r\n"])
    # .16 talks before the banner
    with connect(host, port, "127.0.0.16") as s:
        s.sendall(b"EHLO pregreet.example.test\r\n")
        time.sleep(0.3)
        read_reply(s, 3)
    # .17 pipelines where PIPELINING is not advertised
    with connect(host, port, "127.0.0.17") as s:
        read_reply(s)
        s.sendall(b"EHLO client.example.test\r\n")
        read_reply(s)
        s.sendall(b"MAIL FROM:<spam@spammer.example>\r\nRCPT TO:<bob@mx.example.test>\r\nDATA\r\n")
        time.sleep(0.3)
        read_reply(s, 3)
    # .18 a syntax error; .19 too many nonmail commands; .20 too many protocol errors;
    # .21 too many unrecognized commands
    converse(host, port, "127.0.0.18", [b"EHLO client.example.test\r\n", b"MAIL FROM: spam at spammer\r\n",
                                        b"QUIT\r\n"])
    converse(host, port, "127.0.0.19", [b"EHLO client.example.test\r\n"] + [b"NOOP\r\n"] * 5)
    converse(host, port, "127.0.0.20", [b"EHLO client.example.test\r\n"] + [b"RCPT TO:<bob@mx.example.test>\r\n"] * 5)
    converse(host, port, "127.0.0.21", [b"EHLO client.example.test\r\n"] + [b"FOO bar\r\n"] * 5)
    # .22 falls silent after EHLO (smtp_receive_timeout = 2s)
    with connect(host, port, "127.0.0.22") as s:
        read_reply(s)
        s.sendall(b"EHLO client.example.test\r\n")
        read_reply(s)
        read_reply(s, 5)
    # .23 refused after DATA
    converse(host, port, "127.0.0.23", [
        b"EHLO client.example.test\r\n", b"MAIL FROM:<spam@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
        b"DATA\r\n", b"X-Mailban-Test: reject\r\nSubject: buy\r\n\r\nbuy now\r\n.\r\n", b"QUIT\r\n"])
    # .24 ratelimit: 2 recipients an hour
    converse(host, port, "127.0.0.24", [b"EHLO client.example.test\r\n", b"MAIL FROM:<news@spammer.example>\r\n"]
             + [f"RCPT TO:<{u}@mx.example.test>\r\n".encode() for u in ("alice", "bob", "postmaster", "alice")]
             + [b"QUIT\r\n"])
    # .25 sender verify failure
    converse(host, port, "127.0.0.25", [b"EHLO client.example.test\r\n", b"MAIL FROM:<nosuch@mx.example.test>\r\n",
                                        b"RCPT TO:<bob@mx.example.test>\r\n", b"QUIT\r\n"])
    # .26 drops the connection after EHLO
    with connect(host, port, "127.0.0.26") as s:
        read_reply(s)
        s.sendall(b"EHLO client.example.test\r\n")
        read_reply(s)
    # .27 AUTH with invalid base64, then an AUTH cancelled
    converse(host, port, "127.0.0.27", [b"EHLO client.example.test\r\n", b"AUTH PLAIN !!!notbase64\r\n",
                                        b"AUTH LOGIN\r\n", b"*\r\n", b"QUIT\r\n"])
    # .28 relay denied from a named client
    converse(host, port, "127.0.0.28", [b"EHLO client.example.test\r\n", b"MAIL FROM:<spam@spammer.example>\r\n",
                                        b"RCPT TO:<victim@remote.example.net>\r\n", b"QUIT\r\n"])
    # .29 AUTH PLAIN wrong over IPv6
    converse("::1", port, "::1", [b"EHLO client.example.test\r\n", plain("alice@example.test", "wrong6"), b"QUIT\r\n"])
    # .30 a user name that forges an address; .31 an address literal as HELO
    converse(host, port, "127.0.0.30", [b"EHLO client.example.test\r\n",
                                        plain("x [6.6.6.6]:25: 535 Incorrect authentication data (set_id=y)", "nope"),
                                        b"QUIT\r\n"])
    converse(host, port, "127.0.0.31", [b"EHLO [6.6.6.6]\r\n", b"MAIL FROM:<spam@[6.6.6.6]>\r\n",
                                        b"RCPT TO:<victim@remote.example.net>\r\n", b"QUIT\r\n"])
    # .32 a plain inbound message
    converse(host, port, "127.0.0.32", [
        b"EHLO sender.example.org\r\n", b"MAIL FROM:<friend@sender.example.org>\r\n", b"RCPT TO:<alice@mx.example.test>\r\n",
        b"DATA\r\n", b"Subject: hi\r\n\r\nhi alice\r\n.\r\n", b"QUIT\r\n"])


def traffic_outbound(host: str = "127.0.0.1", port: int = PORT) -> None:
    """.40: an authenticated submission whose sender, Message-ID and subject forge fields, to two
    local users (one delivery: `=>` then `->`), a :fail: address (`**`, and Exim's bounce to the
    sender) and a remote one (deferred: `==`)."""
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0S3cret-alice") + b"\r\n"
    body = (b"Message-ID: <a H=[6.6.6.6] A=plain_server:mallory@x>\r\n"
            b"Subject: hi A=plain_server:mallory H=[6.6.6.6] U=root\r\n\r\nhello\r\n.\r\n")
    converse(host, port, "127.0.0.40", [
        b"EHLO client.example.test\r\n", plain,
        b'MAIL FROM:<"x H=[6.6.6.6] P=esmtpa A=plain_server:mallory"@example.test>\r\n',
        b"RCPT TO:<bob@mx.example.test>\r\n", b"RCPT TO:<alice@mx.example.test>\r\n",
        b"RCPT TO:<gone@mx.example.test>\r\n", b"RCPT TO:<friend@remote.example.net>\r\n",
        b"DATA\r\n", body, b"QUIT\r\n"])


def capture_outbound(outdir: Path, suites: list[str]) -> None:
    """The `outbound` run only: traffic_outbound and a local sendmail(1) submission."""
    outdir.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        exim = Exim(suite, "outbound")
        try:
            exim.start()
            with exim.inside():
                traffic_outbound()
            exim.submit_local_outbound()
            time.sleep(3)
            (outdir / f"{suite}-outbound.version").write_text(exim.version + "\n")
            for name, path in (("mainlog", exim.mainlog), ("syslog", exim.syslog)):
                if path.exists():
                    shutil.copy(path, outdir / f"{suite}-outbound.{name}")
        finally:
            exim.stop()
        exim.cleanup()
        print(f"[exim] {suite} outbound: {exim.version}")


def capture(outdir: Path, suites: list[str]) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        for run in ("default", "selectors"):
            exim = Exim(suite, run)
            try:
                exim.start()
                with exim.inside():
                    traffic()
                exim.submit_local()
                time.sleep(3)  # deliveries, the deferral, syslog's flush
                (outdir / f"{suite}-{run}.version").write_text(exim.version + "\n")
                for name, path in (("mainlog", exim.mainlog), ("rejectlog", exim.rejectlog),
                                   ("syslog", exim.syslog)):
                    if path.exists():
                        shutil.copy(path, outdir / f"{suite}-{run}.{name}")
            finally:
                exim.stop()
            exim.cleanup()
            print(f"[exim] {suite} {run}: {exim.version}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "capture-outbound":
        capture_outbound(Path(sys.argv[2]), sys.argv[3:] or list(SUITES))
    elif len(sys.argv) >= 3 and sys.argv[1] == "capture":
        capture(Path(sys.argv[2]), sys.argv[3:] or list(SUITES))
    else:
        print(__doc__)
