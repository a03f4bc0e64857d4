#!/usr/bin/env bash
# Install the Debian packages mailban's tests use, on a bare Debian 12 machine (as root).
# Services are not started here: the tests start postfix, dovecot and sendmail themselves on
# loopback or inside network namespaces they create, and stop them afterwards.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=600"

packages=(
    nftables libnftables1 iproute2              # kernel sets, network namespaces, veth
    postfix dovecot-core swaks                  # real MTA lines (SASL via dovecot)
    dovecot-imapd dovecot-pop3d                 # IMAP/POP3 login failures (tests/test_real_mta.py)
    m4 liblockfile1 sasl2-bin rsyslog            # sendmail, unpacked from its .debs by the tests
    procps psmisc util-linux python3-minimal    # pgrep/kill, setpriv; the system python for the unprivileged run
    chromium groff-base                         # the HTML report opened headless; man pages checked
    systemd-journal-remote                      # real journal files for the journal source tests
    redis-server                                # the fleet tests share one (tests/test_cluster.py)
    openssl                                     # throwaway CA and certificates (tests/test_cluster_tls.py)
    gcc libc6-dev python3-dev                   # mailban's C module (mailban/core/_speedups.c)
    debootstrap                                 # the Debian 13 root (tests/mta/trixie.py)
    build-essential debhelper dh-python pybuild-plugin-pyproject python3-all-dev python3-hatchling
    lintian                                     # the Debian package built and checked (tests/test_debian_package.py)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
    echo 'postfix postfix/mailname string mail.example.test' | debconf-set-selections
    $APT update -q
    # Debian starts and enables the services it installs; the tests start their own instances
    # on loopback, so none of these may run or come back at boot (a test machine, not a mail host).
    cleanup_rc=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; cleanup_rc=1
    fi
    $APT install -y -q --no-install-recommends "${missing[@]}"
    [ -z "$cleanup_rc" ] || rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ]; then
        # only the services of packages installed just now: a host's own rsyslog stays as it was
        for p in "${missing[@]}"; do
            case "$p" in
                postfix|redis-server|rsyslog) unit=$p ;;
                dovecot-core) unit=dovecot ;;
                *) continue ;;
            esac
            systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
        done
    fi
fi

# sendmail: its .debs are unpacked into a private tree (installing them would replace postfix).
SM=/opt/mailban-test/sendmail
if [ ! -x "$SM/root/usr/libexec/sendmail/sendmail" ]; then
    rm -rf "$SM"; mkdir -p "$SM/debs" "$SM/root"
    (cd "$SM/debs" && $APT download sendmail-bin sendmail-base sendmail-cf)
    for d in "$SM"/debs/*.deb; do dpkg -x "$d" "$SM/root"; done
fi

# The Debian 13 (trixie) root for tests/mta/trixie.py is built by the tests themselves on first use
# (debootstrap from this machine's mirror, about 45 s) and cached in /var/cache/mailban-test/trixie-root.
