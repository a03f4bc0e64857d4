#!/usr/bin/env bash
# Set up mailban on a fresh Debian 12 mail host and start it with the shipped default
# configuration (or /etc/mailban/mailban.toml when present):
#   sudo bash scripts/quickstart.sh
# Installs nftables and libnftables, a virtualenv in /opt/mailban with mailban from this
# checkout, the `mailban` command in /usr/local/sbin, and the systemd unit. Under systemd the
# service is enabled and started; without systemd (containers) the daemon runs in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    nftables libnftables1 python3 python3-venv ca-certificates \
    gcc libc6-dev python3-dev  # to compile mailban's C module (optional: it runs without, slower)

python=${PYTHON:-python3}
[ -x /opt/mailban/bin/python ] || "$python" -m venv /opt/mailban
/opt/mailban/bin/pip install -q --upgrade pip
/opt/mailban/bin/pip install -q .
ln -sf /opt/mailban/bin/mailban /usr/local/sbin/mailban
install -d -m 0755 /usr/local/share/doc/mailban
cp -r README.md docs/. /usr/local/share/doc/mailban/
# `man mailban` and `man mailban.toml` (man-db looks under /usr/local/share/man by itself)
install -D -m 0644 docs/man/mailban.1 /usr/local/share/man/man1/mailban.1
install -D -m 0644 docs/man/mailban.toml.5 /usr/local/share/man/man5/mailban.toml.5
command -v mandb >/dev/null && mandb -q 2>/dev/null || true
install -d -m 0755 /etc/mailban /etc/mailban/jail.d /etc/mailban/filters.d /etc/mailban/actions.d
install -d -m 0750 /var/lib/mailban
mailban check

if [ -d /run/systemd/system ]; then
    install -m 0644 contrib/systemd/mailban.service /etc/systemd/system/mailban.service
    systemctl daemon-reload
    systemctl enable --now mailban.service
    systemctl --no-pager status mailban.service || true
    echo "mailban is running: journalctl -u mailban -f ; mailban status"
else
    echo "no systemd here: running mailban in the foreground (Ctrl-C stops it)"
    exec mailban run
fi
