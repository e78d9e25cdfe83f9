#!/usr/bin/env bash
# relay.sh: the two commands of the README, for a fresh Debian 12 machine, as root.
#
#   ./relay.sh up       install what is needed, then bring up a relay on loopback (see README)
#   ./relay.sh down     stop it            ./relay.sh status   say what runs
#   ./relay.sh test     install what the tests need, then run them
#
# Installs Debian's packages, creates the vmail user and builds a venv from Debian's
# /usr/bin/python3 in a world-readable place (the daemons run as vmail and must execute it).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

PREFIX=${CHATMAIL_PREFIX:-/usr/local/lib/chatmaild}
VENV=$PREFIX/venv
TEST_VENV=$PREFIX/venv-test
# libgcrypt20: filtermail's armor CRC-24; openssl: the self-signed certificate; ca-certificates:
# the CA store the push notifier verifies the gateway against
PACKAGES="postfix dovecot-core dovecot-imapd dovecot-lmtpd supervisor python3-venv openssl libgcrypt20 ca-certificates"
# cron runs the daily expiry, except where PID 1 is systemd (a timer does it there)
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] || PACKAGES="$PACKAGES cron"
# GnuPG encrypts test mail; dnsmasq serves DKIM keys; systemd-analyze checks the rendered timer
# (it works without systemd running); cron: a test runs it under a relay's supervisord
TEST_PACKAGES="gnupg dnsmasq-base systemd cron"

need_root() {
    if [ "$(id -u)" != 0 ]; then echo "relay.sh: run as root" >&2; exit 1; fi
}

install_packages() {  # install_packages [EXTRA_PACKAGES]
    # apt-get update only when something is missing: running up again stays fast and offline
    local missing="" p
    for p in $PACKAGES ${1:-}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    echo "relay.sh: installing Debian packages:$missing"
    # Postfix's package would otherwise ask how to configure the system's mail (we run our own)
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
}

create_vmail() {
    if ! id vmail >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /home/vmail --create-home --shell /usr/sbin/nologin vmail
    fi
}

build_venv() {  # build_venv DIR [EXTRAS]
    local venv=$1 extras=${2:-}
    if [ ! -x "$venv/bin/python" ]; then
        mkdir -p "$(dirname "$venv")"
        chmod 755 "$(dirname "$venv")"
        /usr/bin/python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c "import setuptools, wheel" 2>/dev/null; then
        "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    fi
    # no build isolation and no --upgrade: once installed, running up again needs no network
    "$venv/bin/pip" install -q --no-build-isolation ".$extras"
    chmod -R a+rX "$venv"
}

install_all() {  # install_all [EXTRA_PACKAGES]
    need_root
    install_packages "${1:-}"
    create_vmail
}

cmd=${1:-}
case "$cmd" in
    up|render)
        install_all
        build_venv "$VENV"
        exec "$VENV/bin/chatmail-relay" "$@"
        ;;
    down|status|init)
        if [ ! -x "$VENV/bin/chatmail-relay" ]; then
            [ "$cmd" = init ] || { echo "not installed: nothing runs"; exit 0; }
            install_all
            build_venv "$VENV"
        fi
        exec "$VENV/bin/chatmail-relay" "$@"
        ;;
    test)
        shift
        install_all "$TEST_PACKAGES"
        build_venv "$TEST_VENV" "[test]"
        exec "$TEST_VENV/bin/python" -m pytest "$@"
        ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
