#!/usr/bin/env bash
# Prepare a fresh Debian machine: system packages when missing, a .venv with the project installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(bash scripts/pick-python.sh)  # Debian's optimized python3 when it is 3.11+ (see there)

need_apt=()
"$PY" -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
"$PY" -c 'import pathlib, sysconfig, sys; sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())' \
    >/dev/null 2>&1 || need_apt+=(python3-dev)  # pcapy-ng compiles against the headers
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # browser tests (Playwright drives Debian's build)
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)  # differential test (tests/test_tshark_diff.py)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the blocklist examples in docs/examples use it
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)  # nftables example, loaded in a test namespace
command -v fail2ban-regex >/dev/null 2>&1 || need_apt+=(fail2ban)  # fail2ban example filter (tests/test_blocklist.py)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # packaging/ units (tests/test_packaging.py)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)  # [ship]/[collect] tests
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # noninteractive: tshark's package asks (debconf) whether non-root users may capture; the default (no) is kept
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" python3-dev gcc >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    echo "setup: .venv made with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')" >&2
fi
log=.venv/install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[test]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: installing the project failed (log above, kept in $log)" >&2
    exit 1
fi
# Bytecode for the project's own modules: an editable install writes none, and with
# PYTHONDONTWRITEBYTECODE set every `maltrail sensor` start compiled them twice (the sensor and its
# fork server), about 0.1 s of CPU each.
.venv/bin/python -m compileall -q engine workers shm webui >/dev/null
# The heuristics' Hyperscan databases, compiled once into the user's cache (a few seconds; every
# later sensor start loads them in a millisecond).
.venv/bin/python -c 'from workers.heuristics import http_rules; http_rules.prepare()'
