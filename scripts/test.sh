#!/usr/bin/env bash
# Set up and run mailban's whole test suite on Debian 12, as root:
#   bash scripts/test.sh [pytest args...]
# Installs the apt packages the tests use (nftables, iproute2, postfix, dovecot, swaks, the
# sendmail tooling, gcc), creates a virtualenv in .venv, installs mailban with its test extras
# from this checkout (editable, see below), and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "the tests need root (network namespaces, nftables, postfix); run with sudo" >&2
    exit 1
fi

bash tests/mta/install.sh

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
# Editable: pytest imports mailban from this source tree (the tests are a package under it), so
# the install compiles the C module (mailban/core/_speedups.c) next to its source, where that
# import finds it. tests/test_packaging.py checks what a wheel carries.
.venv/bin/pip install -q -e ".[test]"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
