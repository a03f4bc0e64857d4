"""Real Exim (4.96, 4.98 and, named, testing's 4.100.1, Debian 11's 4.94.2 and 4.98.2 built with
OpenSSL 3 and 1.1) provoked with the shapes tests/mta/exim.py does not reach, under several log_selector
settings, over IPv4 and IPv6, with and without reverse DNS names, into its own files and through
syslog: the capture behind tests/filters/exim4{94,96,98,100,98ssl,98ssl11}-captured-*.log
(tests/mta/exim_score.py counts found/missed/wrong).

Re-run (as root, on a test machine; about 4 minutes once the roots of tests/mta/exim.py exist):

    python3 -m tests.mta.exim_breadth capture OUTDIR [bookworm|trixie|forky|bullseye|openssl|openssl11 ...]

(bookworm and trixie by default; forky, Debian testing, bullseye, openssl and openssl11 only when named: see
tests/mta/exim.py TESTING, OLDER and BUILT. `openssl` is Exim 4.98.2 built from Exim's source
with OpenSSL 3 in Debian 12's root (tests/mta/exim_openssl.py; its dovecot run adds dovecot-core
to that root, the build having the dovecot authenticator): Debian's Exims use GnuTLS, the
OpenSSL builds of cPanel, RHEL/EPEL, FreeBSD and source installs write other TLS lines; its
samples are exim498ssl-captured-RUN.log. `openssl11` is the same build with OpenSSL 1.1.1 in
Debian 11's root (dovecot 2.3 there, configured as bullseye's), the library of AlmaLinux/RHEL 8
cPanel hosts and Ubuntu 20.04: exim498ssl11-captured-RUN.log. 4.94 differs in two places: smtp_accept_max_per_connection
is a fixed 3 there, PER_CONNECTION_FIXED, so .16 sends three messages; and it accepts MAIL
before HELO (hosts_require_helo came with 4.95), so .15 logs no reject.)

Each run starts one Exim (tests.mta.exim.Exim, in a network namespace named `eximcap-*` with
`lo` only, which also carries fd00:e1::N/128) and sends every category of `traffic()` twice:
from 127.0.0.N and from fd00:e1::N (N, the category, is the client's last number). The runs
(RUNS below) differ only in what Exim writes:
- `default`: Debian's default log_selector, mainlog + syslog, no reverse DNS (`H=(helo) [ip]`);
  recipients_max_reject = true;
- `all`: `log_selector = +all`, mainlog + syslog, log_timezone, a DNS server (tests/mta/dnsstub.py)
  that gives every client a reverse name whose forward lookup matches (`H=name (helo) [ip]:port`),
  except .44 (its name does not resolve back: no name) and .45 (no PTR: +host_lookup_failed);
  the excess recipients deferred (recipients_max_reject = false);
- `all-minus`: `log_selector = +all -host_lookup_failed -arguments -queue_time -deliver_time`,
  through syslog only (log_file_path = syslog, syslog_timestamp = false), names as in `all`;
- `syslog-nodup`: log_file_path = syslog with syslog_duplication = false (docs/quickstart.md's
  advice), Debian's default log_selector, no names: each reject once, a reject made in a message
  as its rejectlog copy in parts (`[1\\N] line`, then the envelope and headers);
- `listed`: `+pid +incoming_port +incoming_interface +smtp_connection +tls_peerdn
  +sender_on_delivery +received_recipients`, mainlog only, no names;
- `dovecot`: exim4-daemon-heavy and dovecot-core in a root of their own (built once from the
  light root, about 40 s), Exim's PLAIN and LOGIN going through dovecot's auth socket
  (`dovecot_traffic()`: .50-.55), +incoming_port; Exim's mainlog and dovecot's log.

`python3 -m tests.mta.exim_breadth samples DIR` then writes tests/filters/exim49?-captured-RUN.log
from a capture directory, with the expectations the filters give (review the diff); a run left
out of the capture (`capture DIR bookworm trixie default all all-minus listed`: the `dovecot`
run's traffic did not change) keeps its file.

The categories, by N (hostile ones put a forged 6.6.6.6 into text the client chose):
.10 AUTH PLAIN wrong; .11 AUTH LOGIN wrong; .12 AUTH CRAM-MD5 wrong; .13 AUTH PLAIN right and a
message out through the smarthost, which is this same Exim on 127.0.0.1 (it refuses to relay:
the sender side logs the remote reject with H=127.0.0.1, the receiving side a relay-denied of
127.0.0.1); .14 relay denied with a sender forging `H=[6.6.6.6]:25 ... rejected RCPT`;
.15 MAIL before EHLO (no-helo); .16 three messages where smtp_accept_max_per_connection is 2;
.17 seven recipients where recipients_max is 5; .18 the same with a sender forging a client;
.19 silent in DATA (smtp_receive_timeout = 2s: data timeout); .20 the same with a forged sender;
.21 EHLO a name that resolves elsewhere (helo_verify_hosts); .22 HELO [6.6.6.6] (helo_verify_hosts);
.23 denied in the connect ACL; .24 dropped in the connect ACL; .25 host_reject_connection;
.26 STARTTLS then bytes that are no TLS handshake (tls-failed); .27 plain text on the
tls_on_connect port 2465 (tls-failed); .28 denied by the connect ACL on port 2465 (4.97+:
`dropped by 'connect' ACL`); .29 TLS set up, then silent (command timeout on a TLS connection);
.30 silent after EHLO (command timeout); .31 pipelining where it is not advertised, the command
forging `" H=[6.6.6.6]`; .32 too many nonmail commands; .33 too many syntax or protocol errors;
.34 EHLO `H=[6.6.6.6]` (invalid HELO argument); .35 a connection with no MAIL that hangs up
(lost connection; no-mail with +smtp_no_mail); .36 hangs up in DATA (lost while reading message
data); .37 AUTH LOGIN with the user `x [6.6.6.6]:25 (set_id=y)`; .38 a second connection where
smtp_accept_max_per_host is 1; .39 an ordinary inbound message with a forging subject and
sender (no event); .40 an SMTP syntax error in MAIL; .41 talks before the banner; .44 and .45
relay denied (no reverse name: .44's PTR does not resolve back, .45 has none); .46 a sender
forging reject reasons, then QUIT (the incomplete transaction line must give no event); .47
relay denied over TLS with a client certificate whose subject forges a client and a reason
(`DN="..."` with +tls_peerdn); .42 EHLO and a half-close at once (4.99+: `Error or EOF on input
from`, after the HELO ACL; 4.98: a lost connection); .48 a MAIL command holding quotes and a
forged client (a syntax error: 4.99+ escape the quotes); .49 STARTTLS, AUTH right and a message
(an authenticated arrival with X=: no event but exim-queue's). .42, .48 and .49 came after the
first 4.96/4.98 captures: every captured file has them since the re-capture for the audit
below (4.94's too, re-captured after it).
From the audit against the logs Exim's own test suite expects (lines that start with the message
id once Exim has begun a message, a BDAT chunk, VRFY): .43 STARTTLS, then the TCP connection
dropped in a message's body without TLS's close (`QID TLS error ... (recv)`); .56 a BDAT chunk with
the next BDAT command right behind it where PIPELINING is not advertised, that command forging a
client without a quote (`next input="..."...`); .57 hangs up in a message's body, then after a
first BDAT chunk (4.97+: `QID SMTP connection from ... lost while reading message data`); .58
silent in a message's body, its sender forging a client (`QID SMTP data timeout`); .59 a whole
message and the connection closed with its final dot (`QID SMTP connection lost after final dot`);
.60 VRFY, answered for it alone, of an unknown address and of one whose quoted local part forges a
client (`VRFY failed for ARG H=...`); .61 a message the DATA ACL refuses (`rejected after DATA`),
its subject forging such a reject with a `[1\\3] ` of its own (through syslog without
duplication, only the rejectlog copy comes, in parts: the subject is a part of its own).
For the OpenSSL build's TLS lines, and clients that reset the connection (SO_LINGER 0: Exim adds
` (error: Connection reset by peer)`): .62 MAIL and RCPT, then a reset (`unexpected disconnection
while reading SMTP command`); .63 EHLO, then a reset (`SMTP connection from ... lost (error: ...)`
with +smtp_connection); .64 the tls_on_connect port, nothing sent: one connection closed at once,
one reset at once (OpenSSL 3: `(SSL_accept): error:0A000126:...unexpected eof while reading` and
`(SSL_accept): ret 5`); .65 STARTTLS, then a close before any handshake byte; .66 a hand-made
ClientHello offering TLS 1.0 only, after STARTTLS and on port 2465 (then silent on 2525: a command
timeout); .67 TLS up, MAIL and RCPT, then the TCP connection closed without close_notify (OpenSSL 3:
`TLS error (SSL_read): on connection from ...`; .43 is the same in a message's body); .68 TLS up,
EHLO, then a reset.
.69 and .70: commands holding quotes that forge nothing (a quoted local part): a syntax error
in MAIL, and MAIL and RCPT at once where PIPELINING is not advertised; Exim's ` H=` is the
line's only one, so the rules read them (.31 and .48 forge ` H=` as well: no event).
The smarthost routes send .13's messages to this Exim (remote.example.net), to a fake server
that answers 421 at the greeting (busy.example.net, port 2598) and to one that answers 451 to
MAIL (picky.example.net, 2599), their replies forging reject reasons.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from tests.mta.clients import connect, converse, read_reply
from tests.mta.dnsstub import DnsStub
from tests.mta.exim import BUILT, PORT, RELEASES, SUITES, Exim, ensure_root
from tests.mta.exim import root_of as mta_root_of

TLS_PORT = 2465
V6 = "fd00:e1::"

# Exim's configuration; @@NAME@@ are filled in per run (Exim's own ${...} keeps its braces).
CONFIG = r"""
primary_hostname = mx.example.test
domainlist local_domains = mx.example.test : example.test
hostlist relay_from = <; 127.0.0.13 ; @@V6@@13
local_interfaces = <; 127.0.0.1 ; ::1
daemon_smtp_ports = 2525 : 2465
tls_on_connect_ports = 2465
spool_directory = /var/spool/exim4
log_file_path = @@LOG_FILE_PATH@@
@@LOG_EXTRA@@
exim_user = Debian-exim
exim_group = Debian-exim
never_users = root
host_lookup = @@HOST_LOOKUP@@
rfc1413_hosts =
rfc1413_query_timeout = 0s
pipelining_connect_advertise_hosts =
tls_advertise_hosts = *
tls_certificate = /etc/exim4/mb-test.crt
tls_privatekey = /etc/exim4/mb-test.key
tls_verify_certificates = system
tls_try_verify_hosts = <; 127.0.0.47 ; @@V6@@47
auth_advertise_hosts = *
pipelining_advertise_hosts = <; ! 127.0.0.31 ; ! @@V6@@31 ; ! 127.0.0.56 ; ! @@V6@@56 ; ! 127.0.0.70 ; ! @@V6@@70 ; *
helo_verify_hosts = <; 127.0.0.21 ; @@V6@@21 ; 127.0.0.22 ; @@V6@@22
host_reject_connection = <; 127.0.0.25 ; @@V6@@25
smtp_accept_max_per_connection = ${if match_ip{$sender_host_address}{<; 127.0.0.16 ; @@V6@@16}{2}{1000}}
smtp_accept_max_per_host = ${if match_ip{$sender_host_address}{<; 127.0.0.38 ; @@V6@@38}{1}{100}}
recipients_max = 5
recipients_max_reject = @@RCPT_REJECT@@
smtp_accept_max_nonmail = 3
smtp_accept_max_nonmail_hosts = <; 127.0.0.32 ; @@V6@@32
smtp_max_synprot_errors = 3
smtp_receive_timeout = 2s
ignore_bounce_errors_after = 0s
timeout_frozen_after = 1d
acl_smtp_connect = acl_connect
acl_smtp_rcpt = acl_rcpt
acl_smtp_helo = acl_helo
acl_smtp_vrfy = acl_vrfy
acl_smtp_data = acl_data

begin acl
# VRFY answered for .60 only (Exim refuses it to everyone when acl_smtp_vrfy is unset)
acl_vrfy:
  accept  hosts = <; 127.0.0.60 ; @@V6@@60
  deny

# a content check refusing .61's message after DATA (a spam scanner's verdict, as admins log it)
acl_data:
  deny    hosts = <; 127.0.0.61 ; @@V6@@61
          message = message content rejected
          log_message = spam score 12.5 too high
  accept

# accepts all: a HELO ACL makes Exim check the input's synchronization after it (cPanel has one)
acl_helo:
  accept

acl_connect:
  deny    hosts = <; 127.0.0.23 ; @@V6@@23 ; 127.0.0.28 ; @@V6@@28
          message = go away
          log_message = listed in the test's block list
  drop    hosts = <; 127.0.0.24 ; @@V6@@24
          message = go away now
          log_message = dropped by the test's block list
  accept

acl_rcpt:
  accept  hosts = :
  accept  authenticated = *
  deny    message = relay not permitted
          !domains = +local_domains
  require message = Unknown user
          verify = recipient
  accept

begin routers
smarthost:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = busy.example.net 127.0.0.1::2598 ; picky.example.net 127.0.0.1::2599 ; * 127.0.0.1::2525
  self = send
  no_more
local_user:
  driver = accept
  domains = +local_domains
  local_parts = alice : bob : postmaster
  transport = devnull

begin transports
remote_smtp:
  driver = smtp
  hosts_try_fastopen = :
  hosts_avoid_tls = *
devnull:
  driver = appendfile
  file = /dev/null
  user = Debian-exim

begin retry
*  *  F,1h,15m

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and {{eq{$auth2}{alice@example.test}}{eq{$auth3}{S3cret-alice}}}}
  server_set_id = $auth2
login_server:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = ${if and {{eq{$auth1}{alice@example.test}}{eq{$auth2}{S3cret-alice}}}}
  server_set_id = $auth1
cram_server:
  driver = cram_md5
  public_name = CRAM-MD5
  server_secret = ${if eq{$auth1}{alice@example.test}{S3cret-alice}fail}
  server_set_id = $auth1
"""

RUNS: dict[str, dict[str, str]] = {
    "default": {"LOG_FILE_PATH": "/var/log/exim4/%slog : syslog", "LOG_EXTRA": "",
                "HOST_LOOKUP": "", "RCPT_REJECT": "true"},
    "all": {"LOG_FILE_PATH": "/var/log/exim4/%slog : syslog",
            "LOG_EXTRA": "log_selector = +all\nlog_timezone = true",
            "HOST_LOOKUP": "*", "RCPT_REJECT": "false"},
    "all-minus": {"LOG_FILE_PATH": "syslog",
                  "LOG_EXTRA": "log_selector = +all -host_lookup_failed -arguments -queue_time -deliver_time\n"
                               "syslog_timestamp = false",
                  "HOST_LOOKUP": "*", "RCPT_REJECT": "true"},
    "dovecot": {"LOG_FILE_PATH": "/var/log/exim4/%slog", "LOG_EXTRA": "log_selector = +incoming_port",
                "HOST_LOOKUP": "", "RCPT_REJECT": "true"},
    "syslog-nodup": {"LOG_FILE_PATH": "syslog", "LOG_EXTRA": "syslog_duplication = false",
                     "HOST_LOOKUP": "", "RCPT_REJECT": "true"},
    "listed": {"LOG_FILE_PATH": "/var/log/exim4/%slog",
               "LOG_EXTRA": "log_selector = +pid +incoming_port +incoming_interface +smtp_connection "
                            "+tls_peerdn +sender_on_delivery +received_recipients",
               "HOST_LOOKUP": "", "RCPT_REJECT": "true"},
}

# The `dovecot` run: exim4-daemon-heavy (which has the dovecot authenticator) and dovecot-core in
# a root of their own (the light root plus the two packages, cached like it), Exim asking
# dovecot's auth socket; the PLAIN and LOGIN authenticators of CONFIG are replaced by these.
DOVECOT_AUTH = r"""
dovecot_plain:
  driver = dovecot
  public_name = PLAIN
  server_socket = /run/dovecot/auth-client
  server_set_id = $auth1
dovecot_login:
  driver = dovecot
  public_name = LOGIN
  server_socket = /run/dovecot/auth-client
  server_set_id = $auth1
"""
DOVECOT_CONF = {
    "bookworm": """protocols =
log_path = /var/log/dovecot.log
auth_verbose = yes
auth_mechanisms = plain login
auth_failure_delay = 0
ssl = no
passdb {
  driver = passwd-file
  args = /etc/dovecot/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/tmp
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
""",
    "trixie": """dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
protocols =
log_path = /var/log/dovecot.log
auth_verbose = yes
auth_mechanisms = plain login
auth_failure_delay = 0
auth_allow_cleartext = yes
ssl = no
passdb passwd-file {
  passwd_file_path = /etc/dovecot/users
}
userdb static {
  fields {
    uid = nobody
    gid = nogroup
    home = /tmp
  }
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
""",
}


DOVECOT_CONF["bullseye"] = DOVECOT_CONF["bookworm"]  # dovecot 2.3 (2.3.13 in bullseye)
DOVECOT_CONF["openssl"] = DOVECOT_CONF["bookworm"]  # Debian 12's root
DOVECOT_CONF["openssl11"] = DOVECOT_CONF["bookworm"]  # Debian 11's root: dovecot 2.3, as bullseye


def ensure_heavy_root(suite: str) -> Path:
    """The light root of tests/mta/exim.py plus exim4-daemon-heavy and dovecot-core (about 40 s);
    a built suite's root plus dovecot-core only (its own exim4 has the dovecot authenticator:
    exim4-daemon-heavy would replace it)."""
    root = mta_root_of(suite).with_name(f"exim-{suite}-heavy-root")
    if (root / "usr/sbin/dovecot").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(ensure_root(suite)), str(tmp)], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(tmp / "proc")], check=True)
    try:
        packages = "dovecot-core" if suite in BUILT else "exim4-daemon-heavy dovecot-core"
        subprocess.run(["chroot", str(tmp), "bash", "-c", "export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q "
                        f"--no-install-recommends {packages}"],
                       check=True, capture_output=True, timeout=900)
    finally:
        subprocess.run(["umount", "-l", str(tmp / "proc")], check=False)
    tmp.rename(root)
    return root


def start_dovecot(exim: Exim) -> None:
    """dovecot in Exim's root and namespace, its auth socket for Exim; alice's password."""
    r = exim.root
    (r / "etc/dovecot/dovecot.conf").write_text(DOVECOT_CONF.get(exim.suite, DOVECOT_CONF["trixie"]))  # 2.4 after trixie
    (r / "etc/dovecot/users").write_text("alice@example.test:{PLAIN}S3cret-alice\n")
    exim.procs.append(subprocess.Popen(["ip", "netns", "exec", exim.netns, "chroot", str(r), "dovecot", "-F"]))
    sock = r / "run/dovecot/auth-client"
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_dovecot(exim: Exim) -> None:
    """Stop dovecot (its auth socket goes): Exim then answers AUTH with 435."""
    # doveadm returns once the master has gone; the socket file stays, refusing connections
    subprocess.run(["chroot", str(exim.root), "doveadm", "stop"], check=False, capture_output=True, timeout=30)


def dovecot_traffic(host: str, family: int) -> None:
    """.50 PLAIN wrong; .51 LOGIN wrong; .52 an unknown user; .53 a user name forging a client;
    .54 the right password (no event)."""
    ip = lambda n: client_ips(n)[0 if family == 4 else 1]  # noqa: E731
    ehlo = b"EHLO client.example.test\r\n"
    converse(host, PORT, ip(50), [ehlo, _plain("alice@example.test", "wrong1"), b"QUIT\r\n"])
    converse(host, PORT, ip(51), [ehlo, b"AUTH LOGIN\r\n", _b64("alice@example.test"), _b64("wrong2"), b"QUIT\r\n"])
    converse(host, PORT, ip(52), [ehlo, _plain("nosuch@example.test", "x"), b"QUIT\r\n"])
    converse(host, PORT, ip(53), [ehlo, _plain("x [6.6.6.6]:25: 535 Incorrect authentication data (set_id=y)", "x"),
                                  b"QUIT\r\n"])
    converse(host, PORT, ip(54), [ehlo, _plain("alice@example.test", "S3cret-alice"), b"QUIT\r\n"])


# the clients that have no reverse name even where the others have one
NO_NAME = {44, 45}


# Releases whose smtp_accept_max_per_connection is an integer (Exim made it an expanded string
# in 4.95; 4.94 refuses the whole configuration): a fixed limit for every client instead, high
# enough for .13's three messages, and .16 sends that many before the MAIL that is refused.
PER_CONNECTION_FIXED = {"bullseye": 3}


def config_for(run: str, suite: str = "") -> str:
    text = CONFIG.replace("@@V6@@", V6)
    if suite in PER_CONNECTION_FIXED:
        line = next(ln for ln in text.split("\n") if ln.startswith("smtp_accept_max_per_connection = "))
        text = text.replace(line, f"smtp_accept_max_per_connection = {PER_CONNECTION_FIXED[suite]}")
    if run == "dovecot":
        cut = text.index("plain_server:")
        text = text[:cut] + DOVECOT_AUTH + text[text.index("cram_server:"):]
    for key, value in RUNS[run].items():
        text = text.replace(f"@@{key}@@", value)
    return text


def client_ips(n: int) -> tuple[str, str]:
    return f"127.0.0.{n}", f"{V6}{n}"


def dns_records() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every client 10..70 is `cN.clients.example.net` (or `cN-6...` over IPv6); .21's HELO
    name resolves to another address; .44's PTR names a host that does not resolve back."""
    names: dict[str, list[str]] = {"spoofed.example.com": ["10.9.9.9"], "mx.example.test": ["127.0.0.1"]}
    ptr: dict[str, str] = {}
    for n in range(10, 71):
        if n in NO_NAME:
            continue
        v4, v6 = client_ips(n)
        names[f"c{n}.clients.example.net"] = [v4]
        names[f"c{n}-6.clients.example.net"] = [v6]
        ptr[v4] = f"c{n}.clients.example.net"
        ptr[v6] = f"c{n}-6.clients.example.net"
    ptr["127.0.0.1"] = "mx.example.test"
    names["forged.example.net"] = ["10.1.1.1"]
    ptr["127.0.0.44"] = ptr[f"{V6}44"] = "forged.example.net"
    return names, ptr


def make_cert(root: Path) -> None:
    """A throwaway self-signed certificate for STARTTLS and port 2465 (GnuTLS reads it as
    Debian-exim, so the test key is world-readable)."""
    crt, key = root / "etc/exim4/mb-test.crt", root / "etc/exim4/mb-test.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
                    "/CN=mx.example.test", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    key.chmod(0o644)
    # .47's certificate: a subject that forges a client and a reject reason (DN="..." in the
    # lines with +tls_peerdn); the client's own choice, like its HELO
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
                    CLIENT_DN, "-keyout", str(root.parent / "client.key"), "-out", str(root.parent / "client.crt")],
                   check=True, capture_output=True)


CLIENT_DN = "/CN=x H=[6.6.6.6]:25 F=<a> rejected RCPT <b>: relay not permitted"


# --- the clients -----------------------------------------------------------------------------------

@contextlib.contextmanager
def session(host: str, src: str, *steps: bytes) -> Iterator[socket.socket]:
    """A connection to Exim from `src`, greeted, past EHLO and then each step (a reply read to
    each)."""
    with connect(host, PORT, src) as s:
        read_reply(s)
        for step in (b"EHLO client.example.test\r\n",) + steps:
            s.sendall(step)
            read_reply(s)
        yield s


@contextlib.contextmanager
def tls_session(host: str, src: str, *steps: bytes, certdir: Path | None = None) -> Iterator[ssl.SSLSocket]:
    """A session() turned to TLS by STARTTLS (with the client certificate in `certdir`, if given),
    past EHLO again and then each step (a reply read to each)."""
    with session(host, src, b"STARTTLS\r\n") as s, \
            _client_tls(certdir).wrap_socket(s, server_hostname="mx.example.test") as t:
        for step in (b"EHLO client.example.test\r\n",) + steps:
            t.sendall(step)
            read_reply(t)
        yield t


def _drop_tcp(t: ssl.SSLSocket) -> None:
    """End the TCP connection (FIN) without TLS's close_notify (SSLSocket.unwrap() would send one)."""
    t.shutdown(socket.SHUT_RDWR)
    t.close()


def _plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()) + b"\r\n"


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode()) + b"\r\n"


def cram_md5(host: str, src: str) -> None:
    with session(host, src) as s:
        s.sendall(b"AUTH CRAM-MD5\r\n")
        challenge = base64.b64decode(read_reply(s)[4:].strip())
        digest = hmac.new(b"wrong-secret", challenge, hashlib.md5).hexdigest()
        s.sendall(_b64(f"alice@example.test {digest}"))
        read_reply(s)
        s.sendall(b"QUIT\r\n")
        read_reply(s)


def stall_in_data(host: str, src: str, sender: str) -> None:
    with session(host, src, f"MAIL FROM:<{sender}>\r\n".encode(), b"RCPT TO:<bob@mx.example.test>\r\n",
                 b"DATA\r\n") as s:
        s.sendall(b"Subject: partial\r\n")
        read_reply(s, 6)  # Exim gives up after smtp_receive_timeout (2 s)


def stall_after_ehlo(host: str, src: str) -> None:
    with session(host, src) as s:
        read_reply(s, 6)


def _client_tls(certdir: Path | None = None) -> ssl.SSLContext:
    """A client context that takes Exim's self-signed certificate, with the client's own if given."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if certdir is not None:
        ctx.load_cert_chain(str(certdir / "client.crt"), str(certdir / "client.key"))
    return ctx


def starttls_then(host: str, src: str, garbage: bool) -> None:
    """STARTTLS, then either bytes that are no TLS record (a failed handshake) or a good
    handshake followed by silence (the command timeout on a TLS connection)."""
    with session(host, src) as s:
        s.sendall(b"STARTTLS\r\n")
        read_reply(s)
        if garbage:
            s.sendall(b"EHLO this is not a TLS handshake\r\n" * 4)
            read_reply(s, 3)
            return
        with _client_tls().wrap_socket(s, server_hostname="mx.example.test") as t:
            t.settimeout(6)
            t.sendall(b"EHLO client.example.test\r\n")
            try:
                while t.recv(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass


def tls_client_cert_relay(host: str, src: str, certdir: Path) -> None:
    """STARTTLS with a client certificate whose subject forges a client, then a relay attempt."""
    with tls_session(host, src, b"MAIL FROM:<spam@spammer.example>\r\n", b"RCPT TO:<victim@remote.example.net>\r\n",
                     b"QUIT\r\n", certdir=certdir):
        pass


def tls_submission(host: str, src: str) -> None:
    """STARTTLS, AUTH with the right password and one message to a local user: the arrival line
    of an authenticated submission with X= (4.99+ adds the key-exchange group, drops CV=no)."""
    with tls_session(host, src, _plain("alice@example.test", "S3cret-alice"), b"MAIL FROM:<alice@example.test>\r\n",
                     b"RCPT TO:<bob@mx.example.test>\r\n", b"DATA\r\n",
                     b"Subject: over TLS\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"):
        pass


def tls_port_plaintext(host: str, src: str) -> None:
    with connect(host, TLS_PORT, src) as s:
        s.sendall(b"EHLO plain.example.test\r\n")
        read_reply(s, 3)


def tls_port_connect(host: str, src: str) -> None:
    """A client the connect ACL denies, on the tls_on_connect port: TLS first, then Exim drops."""
    try:
        with connect(host, TLS_PORT, src) as s, _client_tls().wrap_socket(s, server_hostname="mx.example.test") as t:
            t.settimeout(3)
            t.recv(4096)
    except (OSError, ssl.SSLError):
        pass


def too_many_per_host(host: str, src: str) -> None:
    with connect(host, PORT, src) as first:
        read_reply(first)
        with connect(host, PORT, src) as second:
            read_reply(second, 3)
        first.sendall(b"QUIT\r\n")
        read_reply(first)


def hang_up_after_ehlo(host: str, src: str) -> None:
    with session(host, src):
        pass


def hang_up_in_data(host: str, src: str) -> None:
    with session(host, src, b"MAIL FROM:<a@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
                 b"DATA\r\n") as s:
        s.sendall(b"Subject: cut\r\n")
        time.sleep(0.1)


def pipelined(host: str, src: str, mail: bytes) -> None:
    """`mail` (a MAIL command) and RCPT at once, where PIPELINING is not advertised."""
    with session(host, src) as s:
        s.sendall(mail + b"RCPT TO:<bob@mx.example.test>\r\n")
        time.sleep(0.3)
        read_reply(s, 3)


def ehlo_then_eof(host: str, src: str) -> None:
    """EHLO and the end of its input at once (a half-close: a health check or a scanner that
    does not wait for the reply): 4.99+ logs `Error or EOF on input from` after the HELO ACL."""
    with connect(host, PORT, src) as s:
        read_reply(s)
        s.sendall(b"EHLO client.example.test\r\n")
        s.shutdown(socket.SHUT_WR)
        read_reply(s, 3)


def _in_body(s: socket.socket | ssl.SSLSocket, sender: str) -> None:
    """MAIL, RCPT, DATA, then the headers and part of a body: Exim has begun the message (its
    lines from here on carry the message id)."""
    for cmd in (f"MAIL FROM:<{sender}>\r\n".encode(), b"RCPT TO:<bob@mx.example.test>\r\n", b"DATA\r\n"):
        s.sendall(cmd)
        read_reply(s)
    s.sendall(b"Subject: cut short\r\n\r\n" + b"the first line of the body\r\n" * 4)
    time.sleep(0.3)


def hang_up_in_body(host: str, src: str) -> None:
    """A client that hangs up in the body of a message (`SMTP connection from ... lost while
    reading message data`), then one that hangs up after a first BDAT chunk (the same line with the
    message id first)."""
    with session(host, src) as s:
        _in_body(s, "cut@spammer.example")
    with session(host, src, b"MAIL FROM:<cut@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
                 b"BDAT 28\r\nSubject: cut short\r\n\r\nhello\r\n"):
        pass


def stall_in_body(host: str, src: str) -> None:
    """Silent in the body of a message until smtp_receive_timeout (`QID SMTP data timeout`); the
    sender forges a client and a duration."""
    with session(host, src) as s:
        _in_body(s, '"x D=1s from [6.6.6.6] F=y"@spammer.example')
        read_reply(s, 6)


def tls_hang_up_in_body(host: str, src: str) -> None:
    """Over TLS, a client that drops the TCP connection in the body of a message, with no TLS
    close_notify (`QID TLS error on connection from ... (recv)` with GnuTLS)."""
    with tls_session(host, src) as t:
        _in_body(t, "cut@spammer.example")
        _drop_tcp(t)


def hang_up_after_dot(host: str, src: str) -> None:
    """A whole message, then the connection closed with its final dot, before Exim's answer (a
    bot that does not wait: `QID SMTP connection lost after final dot`)."""
    with session(host, src, b"MAIL FROM:<fire@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
                 b"DATA\r\n") as s:
        s.sendall(b"Subject: fire and forget\r\n\r\nhello\r\n.\r\n")
        s.shutdown(socket.SHUT_WR)
        read_reply(s, 3)


def bdat_pipelined(host: str, src: str) -> None:
    """CHUNKING where PIPELINING was not advertised: a first chunk with the next BDAT command
    right behind it, whose text forges a client (no quote: the line must give the real one)."""
    with session(host, src, b"MAIL FROM:<chunk@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n") as s:
        s.sendall(b"BDAT 4\r\nabcdBDAT 60 LAST H=[6.6.6.6]:25 next input=x H=[6.6.6.6]:25\r\n")
        time.sleep(0.3)
        read_reply(s, 3)


def pregreet(host: str, src: str) -> None:
    with connect(host, PORT, src) as s:
        s.sendall(b"EHLO pregreet.example.test\r\n")
        time.sleep(0.3)
        read_reply(s, 3)


def _reset(s: socket.socket | ssl.SSLSocket) -> None:
    """Close with SO_LINGER on and 0: the kernel sends a TCP reset, not a FIN (a client killed,
    or one that aborts; Exim's read then fails with ECONNRESET: ` (error: ...)` in its line)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def reset_in_transaction(host: str, src: str) -> None:
    """.62: MAIL and RCPT, then a reset (`unexpected disconnection while reading SMTP command
    from ... (error: Connection reset by peer) D=..`)."""
    with session(host, src, b"MAIL FROM:<reset@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n") as s:
        _reset(s)


def reset_after_ehlo(host: str, src: str) -> None:
    """.63: EHLO, then a reset (with +smtp_connection: `SMTP connection from ... lost (error: ...)`)."""
    with session(host, src) as s:
        _reset(s)


def tls_port_silent_close(host: str, src: str) -> None:
    """.64: connections to the tls_on_connect port that send nothing: one closed (FIN) at once (a
    scanner that completes the TCP handshake), one reset at once (a SYN scan's answer to the
    SYN-ACK reaches Exim as a connection whose first read fails)."""
    with connect(host, TLS_PORT, src) as s:
        s.shutdown(socket.SHUT_WR)
        read_reply(s, 3)
    _reset(connect(host, TLS_PORT, src))
    time.sleep(0.2)  # Exim's line for it before the next client's


def starttls_then_close(host: str, src: str) -> None:
    """.65: STARTTLS, then a close (FIN) before any byte of a handshake."""
    with session(host, src, b"STARTTLS\r\n") as s:
        s.shutdown(socket.SHUT_WR)
        read_reply(s, 3)


def tls10_client_hello() -> bytes:
    """A ClientHello that offers TLS 1.0 only (client_version 3.1, no supported_versions
    extension), made by hand: Python's ssl refuses to offer TLS 1.0 under OpenSSL 3's defaults.
    Fixed random: the traffic stays the same from run to run."""
    body = (b"\x03\x01" + bytes(range(32)) + b"\x00"  # version, random, no session id
            + b"\x00\x06\x00\x2f\x00\x35\x00\xff"   # AES128-SHA, AES256-SHA, renegotiation SCSV
            + b"\x01\x00")                              # null compression only; no extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def tls10_only(host: str, src: str) -> None:
    """.66: the TLS 1.0-only ClientHello after STARTTLS and on the tls_on_connect port (an old
    client or a scanner; both TLS libraries refuse TLS 1.0 by default)."""
    with session(host, src, b"STARTTLS\r\n") as s:
        s.sendall(tls10_client_hello())
        read_reply(s, 3)
    with connect(host, TLS_PORT, src) as s:
        s.sendall(tls10_client_hello())
        read_reply(s, 3)


def tls_close_after_rcpt(host: str, src: str) -> None:
    """.67: TLS up, MAIL and RCPT, then the TCP connection closed (FIN) with no TLS close_notify
    while Exim waits for a command (OpenSSL 3: `TLS error (SSL_read): on connection from ...
    unexpected eof while reading`; .43 is the same in a message's body)."""
    with tls_session(host, src, b"MAIL FROM:<cut@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n") as t:
        _drop_tcp(t)


def tls_reset_after_ehlo(host: str, src: str) -> None:
    """.68: TLS up, EHLO, then a TCP reset."""
    with tls_session(host, src) as t:
        _reset(t)


def traffic(host: str, family: int, certdir: Path | None = None, per_connection: int = 2) -> None:
    """Every category once, from this family's address for it; the ones that wait for Exim's
    2 s timeout run in threads beside the rest. `per_connection`: the run's
    smtp_accept_max_per_connection for .16 (see PER_CONNECTION_FIXED)."""
    ip = lambda n: client_ips(n)[0 if family == 4 else 1]  # noqa: E731
    ehlo = b"EHLO client.example.test\r\n"
    body = b"Subject: hello\r\n\r\nhello\r\n.\r\n"
    slow: list[tuple[Callable[..., None], tuple]] = [
        (stall_in_data, (host, ip(19), "slow@spammer.example")),
        (stall_in_data, (host, ip(20), '"x D=1s from [6.6.6.6] F=y"@spammer.example')),
        (stall_after_ehlo, (host, ip(30))),
        (starttls_then, (host, ip(29), False)),
        (stall_in_body, (host, ip(58))),
    ]
    threads = [threading.Thread(target=f, args=a) for f, a in slow]
    for t in threads:
        t.start()
    converse(host, PORT, ip(10), [ehlo, _plain("alice@example.test", "wrong1"), b"QUIT\r\n"])
    converse(host, PORT, ip(11), [ehlo, b"AUTH LOGIN\r\n", _b64("alice@example.test"), _b64("wrong2"), b"QUIT\r\n"])
    cram_md5(host, ip(12))
    # .13: three messages out through the smarthost routes: to this Exim (relay denied), to a
    # remote that answers 421 at the greeting, to one that answers 451 to MAIL
    out = []
    for domain in ("remote", "busy", "picky"):
        out += [b"MAIL FROM:<alice@example.test>\r\n", f"RCPT TO:<friend@{domain}.example.net>\r\n".encode(),
                b"DATA\r\n", body]
    converse(host, PORT, ip(13), [ehlo, _plain("alice@example.test", "S3cret-alice")] + out + [b"QUIT\r\n"])
    converse(host, PORT, ip(14), [ehlo, b'MAIL FROM:<"x H=[6.6.6.6]:25 rejected RCPT <a>: relay not permitted"'
                                        b"@spammer.example>\r\n", b"RCPT TO:<victim@remote.example.net>\r\n",
                                  b"QUIT\r\n"])
    converse(host, PORT, ip(15), [b"MAIL FROM:<nohelo@spammer.example>\r\n", b"QUIT\r\n"])
    converse(host, PORT, ip(16), [ehlo] + [b"MAIL FROM:<bulk@spammer.example>\r\n",
                                           b"RCPT TO:<bob@mx.example.test>\r\n", b"DATA\r\n", body] * per_connection
             + [b"MAIL FROM:<bulk@spammer.example>\r\n", b"QUIT\r\n"])
    many = [f"RCPT TO:<{u}@mx.example.test>\r\n".encode() for u in ("alice", "bob", "postmaster") * 3][:7]
    converse(host, PORT, ip(17), [ehlo, b"MAIL FROM:<list@spammer.example>\r\n"] + many + [b"QUIT\r\n"])
    converse(host, PORT, ip(18), [ehlo, b'MAIL FROM:<"x> H=[6.6.6.6]"@spammer.example>\r\n'] + many + [b"QUIT\r\n"])
    converse(host, PORT, ip(21), [b"EHLO spoofed.example.com\r\n", b"QUIT\r\n"])
    converse(host, PORT, ip(22), [b"HELO [6.6.6.6]\r\n", b"QUIT\r\n"])
    for n in (23, 24, 25):
        converse(host, PORT, ip(n), [ehlo, b"QUIT\r\n"])
    starttls_then(host, ip(26), True)
    tls_port_plaintext(host, ip(27))
    tls_port_connect(host, ip(28))
    pipelined(host, ip(31), b'MAIL FROM:<" H=[6.6.6.6]:25 next input="@spammer.example>\r\n')
    converse(host, PORT, ip(32), [ehlo] + [b"NOOP\r\n"] * 5)
    converse(host, PORT, ip(33), [ehlo] + [b"RCPT TO:<bob@mx.example.test>\r\n"] * 5)
    converse(host, PORT, ip(34), [b"EHLO H=[6.6.6.6]:25\r\n", b"QUIT\r\n"])
    hang_up_after_ehlo(host, ip(35))
    hang_up_in_data(host, ip(36))
    converse(host, PORT, ip(37), [ehlo, b"AUTH LOGIN\r\n", _b64("x [6.6.6.6]:25 (set_id=y)"), _b64("nope"),
                                  b"QUIT\r\n"])
    too_many_per_host(host, ip(38))
    converse(host, PORT, ip(39), [
        b"EHLO sender.example.org\r\n", b'MAIL FROM:<"news H=[6.6.6.6] rejected"@sender.example.org>\r\n',
        b"RCPT TO:<alice@mx.example.test>\r\n", b"DATA\r\n",
        b"Subject: H=(x) [6.6.6.6]: relay not permitted\r\n\r\nhi alice\r\n.\r\n", b"QUIT\r\n"])
    converse(host, PORT, ip(40), [ehlo, b"MAIL FROM: spam at [6.6.6.6]\r\n", b"QUIT\r\n"])
    # .46: a sender that forges reject reasons, then QUIT (+smtp_incomplete_transaction logs it)
    converse(host, PORT, ip(46), [ehlo, b'MAIL FROM:<"x rejected after DATA: ratelimit rejected EHLO or HELO y"'
                                        b"@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
                                  b"QUIT\r\n"])
    if certdir is not None:
        tls_client_cert_relay(host, ip(47), certdir)
    for n in (44, 45):  # no reverse name where the others have one: relay denied
        converse(host, PORT, ip(n), [ehlo, b"MAIL FROM:<spam@spammer.example>\r\n",
                                     b"RCPT TO:<victim@remote.example.net>\r\n", b"QUIT\r\n"])
    pregreet(host, ip(41))
    ehlo_then_eof(host, ip(42))
    # .48: a command holding quotes (4.99+ escapes them as \" in the syntax-error line) that
    # forges a client and an error text
    converse(host, PORT, ip(48), [ehlo, b'MAIL FROM: "x" H=[6.6.6.6]:25 missing "@spammer.example\r\n',
                                  b"QUIT\r\n"])
    if certdir is not None:
        tls_submission(host, ip(49))
    tls_hang_up_in_body(host, ip(43))
    bdat_pipelined(host, ip(56))
    hang_up_in_body(host, ip(57))
    hang_up_after_dot(host, ip(59))
    # .61: a message the DATA ACL refuses, its subject forging a reject of another client (the
    # rejectlog copy carries the headers: through syslog, parts of their own)
    converse(host, PORT, ip(61), [ehlo, b"MAIL FROM:<spam@spammer.example>\r\n", b"RCPT TO:<bob@mx.example.test>\r\n",
                                  b"DATA\r\n", b"Subject: [1\\3] H=(x) [6.6.6.6] F=<a> rejected after DATA: spam\r\n"
                                  b"\r\nbuy now\r\n.\r\n", b"QUIT\r\n"])
    # .60: VRFY is answered for it: an unknown user, then one whose quoted local part forges a
    # client (Exim writes the argument before the client)
    converse(host, PORT, ip(60), [ehlo, b"VRFY nosuch@mx.example.test\r\n",
                                  b'VRFY "x H=[6.6.6.6]:25"@mx.example.test\r\n', b"QUIT\r\n"])
    # .62-.68: resets, closes before or during TLS, TLS 1.0 (the OpenSSL build's TLS lines)
    reset_in_transaction(host, ip(62))
    reset_after_ehlo(host, ip(63))
    tls_port_silent_close(host, ip(64))
    starttls_then_close(host, ip(65))
    tls10_only(host, ip(66))
    tls_close_after_rcpt(host, ip(67))
    tls_reset_after_ehlo(host, ip(68))
    # .69, .70: commands holding quotes (a quoted local part) but forging nothing: a syntax error,
    # and pipelining where it is not advertised (Exim's ` H=` is then the line's only one)
    converse(host, PORT, ip(69), [ehlo, b'MAIL FROM:<"john doe"@spammer.example\r\n', b"QUIT\r\n"])
    pipelined(host, ip(70), b'MAIL FROM:<"john doe"@spammer.example>\r\n')
    for t in threads:
        t.join()


# What the fake remote servers say (their text is theirs, not a client's of this Exim): Exim
# writes it into `QID H=127.0.0.1 [127.0.0.1]: SMTP error from remote mail server after ...`
# (transports/smtp.c write_logs), where it must not make an event against the remote server.
REMOTE_421 = b"421 4.7.0 rejected RCPT <a@b>: sender rate limit exceeded: relay not permitted\r\n"
REMOTE_451 = b"451 4.7.1 rejected after DATA: ratelimit: User unknown\r\n"


def fake_remote(sock: socket.socket, busy: bool) -> None:
    """A remote server that refuses at the greeting (`busy`) or at MAIL, for every connection."""
    sock.listen(8)
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            try:
                if busy:
                    conn.sendall(REMOTE_421)
                    continue
                conn.sendall(b"220 picky.example.net ESMTP\r\n")
                f = conn.makefile("rb")
                for line in f:
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 picky.example.net\r\n")
                    elif verb == b"MAIL":
                        conn.sendall(REMOTE_451)
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 ok\r\n")
            except OSError:
                pass


def add_v6(netns: str) -> None:
    for n in range(10, 71):
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{V6}{n}/128", "dev", "lo"], check=True)


@contextlib.contextmanager
def running(suite: str, run: str) -> Iterator[Exim]:
    """One Exim of `suite` with the run's settings, its namespace (with the fd00:e1:: addresses),
    the fake remote servers and, where the run looks names up, the DNS server; all gone after."""
    netns = f"eximcap-{suite}-{run}-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    exim = Exim(suite, "default", config=config_for(run, suite), netns=netns)
    exim.ports = f"{PORT}:{TLS_PORT}"
    if run == "dovecot":
        exim.lower = ensure_heavy_root(suite)
    dns = None
    remotes: list[socket.socket] = []
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        add_v6(netns)
        with exim.inside():
            if RUNS[run]["HOST_LOOKUP"]:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", 53))
                dns = DnsStub(sock, *dns_records())
                dns.start()
            for port, busy in ((2598, True), (2599, False)):
                srv = socket.socket()
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind(("127.0.0.1", port))
                remotes.append(srv)
                threading.Thread(target=fake_remote, args=(srv, busy), daemon=True).start()
        exim.start()
        make_cert(exim.root)
        if run == "dovecot":
            start_dovecot(exim)
        yield exim
    finally:
        exim.stop()
        if dns:
            dns.stop()
        for srv in remotes:
            srv.close()
        subprocess.run(["ip", "netns", "del", netns], check=False)
        exim.cleanup()


def run_once(suite: str, run: str, outdir: Path) -> None:
    with running(suite, run) as exim:
        if run == "dovecot":
            with exim.inside():
                dovecot_traffic("127.0.0.1", 4)
                dovecot_traffic("::1", 6)
            stop_dovecot(exim)
            with exim.inside():  # dovecot gone: 435, not the client's doing
                converse("127.0.0.1", PORT, "127.0.0.55", [b"EHLO client.example.test\r\n",
                                                           _plain("alice@example.test", "wrong"), b"QUIT\r\n"])
            dovelog = exim.root / "var/log/dovecot.log"
            if dovelog.exists():
                shutil.copy(dovelog, outdir / f"{suite}-{run}.dovecot")
        else:
            with exim.inside():
                per_connection = PER_CONNECTION_FIXED.get(suite, 2)
                traffic("127.0.0.1", 4, exim.work, per_connection)
                traffic("::1", 6, exim.work, per_connection)
        time.sleep(3)  # the smarthost deliveries, the last timeouts, syslog's flush
        tag = f"{suite}-{run}"
        (outdir / f"{tag}.version").write_text(exim.version + "\n")
        for name, path in (("mainlog", exim.mainlog), ("rejectlog", exim.rejectlog), ("syslog", exim.syslog),
                           ("paniclog", exim.root / "var/log/exim4/paniclog")):
            if path.exists() and path.stat().st_size:
                shutil.copy(path, outdir / f"{tag}.{name}")
    print(f"[exim-breadth] {suite} {run}: {exim.version}", flush=True)


def capture(outdir: Path, suites: list[str], runs: list[str] | None = None) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        for run in runs or list(RUNS):
            run_once(suite, run, outdir)


# which of a run's files go into its sample file (the syslog copy of `all` repeats its mainlog
# under a header the other runs already show; the rejectlog repeats the mainlog's rejects)
SAMPLE_FILES = {"default": ("mainlog", "syslog", "rejectlog"), "all": ("mainlog",),
                "all-minus": ("syslog",), "syslog-nodup": ("syslog",), "listed": ("mainlog",),
                "dovecot": ("mainlog", "dovecot")}
SAMPLES = Path(__file__).resolve().parent.parent / "filters"
DEBIAN = {"bookworm": "Debian 12 bookworm", "trixie": "Debian 13 trixie", "forky": "Debian testing, forky",
          "bullseye": "Debian 11 bullseye", "openssl": "Debian 12 bookworm's root",
          "openssl11": "Debian 11 bullseye's root"}
# what runs there, where it is not Debian's exim4-daemon-light
BINARY = {"openssl": "Exim 4.98.2 built from Exim's source with OpenSSL 3 by\n# tests/mta/exim_openssl.py",
          "openssl11": "Exim 4.98.2 built from Exim's source with OpenSSL 1.1.1 by\n# tests/mta/exim_openssl.py"}
# the sample files' release tag where the release number alone would be another suite's
SAMPLE_TAG = {"openssl": "498ssl", "openssl11": "498ssl11"}


def write_samples(capdir: Path) -> list[Path]:
    """tests/filters/exim{496,498}-captured-RUN.log from a capture directory, every line as Exim
    (or rsyslogd) wrote it, with the expectations the filters give now (`# expect:`; review the diff)."""
    from tests.filter_samples import regen

    written = []
    for suite in RELEASES:
        if not (capdir / f"{suite}-default.version").exists():
            continue  # a capture of some releases only (forky is captured on its own)
        for run, parts in SAMPLE_FILES.items():
            if not (capdir / f"{suite}-{run}.version").exists():
                continue  # a run not captured this time (`capture DIR SUITE RUN...`) keeps its file
            version = (capdir / f"{suite}-{run}.version").read_text().strip()
            short = SAMPLE_TAG.get(suite, RELEASES[suite].replace(".", ""))
            out = SAMPLES / f"exim{short}-captured-{run}.log"
            notes = RUN_NOTES[run]
            if suite in BUILT:  # its dovecot authenticator is the build's, not exim4-daemon-heavy's
                notes = notes.replace("exim4-daemon-heavy", "the OpenSSL build")
            head = [f"# Real Exim lines: {version} ({DEBIAN[suite]},",
                    f"# {BINARY.get(suite, 'exim4-daemon-light')}), captured by tests/mta/exim_breadth.py "
                    "(`python3 -m tests.mta.exim_breadth",
                    f"# capture DIR`), run `{run}`: {notes}",
                    "# Each category comes from its own 127.0.0.N and fd00:e1::N (listed in tests/mta/exim_breadth.py);",
                    "# hostile ones carry a forged 6.6.6.6 in text the client chose (HELO, AUTH user, sender, command),",
                    "# and the smarthost deliveries carry two fake remote servers' hostile replies (their address is",
                    "# 127.0.0.1): no event may name them. Every line is unedited; the parts: " + ", ".join(parts) + "."]
            body: list[str] = []
            for part in parts:
                path = capdir / f"{suite}-{run}.{part}"
                body.append(f"# --- {part} ---")
                body.extend(ln for ln in path.read_text(errors="replace").split("\n") if ln)
            out.write_text("\n".join(head + body) + "\n")
            regen(out)
            written.append(out)
    return written


RUN_NOTES = {
    "default": "Debian's default log_selector, no reverse DNS, recipients_max_reject; mainlog, rsyslogd's\n"
               "# traditional file (syslog_duplication: each reject twice) and rejectlog.",
    "all": "log_selector = +all, log_timezone, reverse DNS names for all but .44/.45, the excess\n"
           "# recipients deferred; mainlog.",
    "all-minus": "log_selector = +all -host_lookup_failed -arguments -queue_time -deliver_time,\n"
                 "# log_file_path = syslog, syslog_timestamp = false, reverse DNS names; rsyslogd's file.",
    "dovecot": "exim4-daemon-heavy authenticating through dovecot's auth socket (dovecot_plain,\n"
               "# dovecot_login), +incoming_port; Exim's mainlog, then dovecot's own log of the same attempts.\n"
               "# .50 PLAIN wrong, .51 LOGIN wrong, .52 unknown user, .53 a user name forging a client, .54 right;\n"
               "# .55 after dovecot stopped (435: not the client's doing).",
    "syslog-nodup": "log_file_path = syslog, syslog_duplication = false (docs/quickstart.md's advice for\n"
                    "# syslog readers: each reject once, through the rejectlog path: one made in a message comes as\n"
                    "# `[1\\N] line` and its envelope and headers as the parts after it), Debian's default\n"
                    "# log_selector, no reverse DNS; rsyslogd's file.",
    "listed": "log_selector = +pid +incoming_port +incoming_interface +smtp_connection +tls_peerdn\n"
              "# +sender_on_delivery +received_recipients, no reverse DNS; mainlog.",
}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "samples":
        for written in write_samples(Path(sys.argv[2])):
            print(written)
    elif len(sys.argv) >= 3 and sys.argv[1] == "capture":
        args = sys.argv[3:]
        capture(Path(sys.argv[2]), [a for a in args if a in RELEASES] or list(SUITES),
                [a for a in args if a in RUNS] or None)
    else:
        print(__doc__)
