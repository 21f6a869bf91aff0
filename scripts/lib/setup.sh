# Shared set-up for scripts/test and scripts/demo: installs what is missing on
# a fresh Debian machine (we run as root there), and nothing when it is present.
# Source it; it defines functions only.

# apt_need PACKAGE COMMAND...: install PACKAGE when any COMMAND is missing.
apt_need() {
    local pkg=$1
    shift
    local cmd
    for cmd in "$@"; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "setup: installing $pkg (missing $cmd)"
            if [ -z "${FPS_APT_UPDATED:-}" ]; then
                DEBIAN_FRONTEND=noninteractive apt-get update -qq
                export FPS_APT_UPDATED=1
            fi
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
            return
        fi
    done
}

# pip_need MODULE PACKAGE: pip-install PACKAGE when python cannot import MODULE.
pip_need() {
    if ! python3 -c "import $1" >/dev/null 2>&1; then
        echo "setup: installing python package $2"
        python3 -m pip install --quiet --disable-pip-version-check "$2" 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$2"
    fi
}

# rust_need COMPONENT: add a rustup component when missing.
rust_need() {
    if ! rustup component list --installed 2>/dev/null | grep -q "^$1"; then
        rustup component add "$1"
    fi
}

# The packages every suite needs.
setup_base() {
    apt_need softhsm2 softhsm2-util
    apt_need opensc pkcs11-tool
    apt_need openssl openssl
    apt_need python3-pip pip3
    pip_need iso8583 pyiso8583
    rust_need rustfmt
    rust_need clippy
}

# apt_need_quiet PKG CMD SERVICE: like apt_need, for packages whose postinst
# enables and starts a server we do not want (we only use the tool): the
# start is blocked with policy-rc.d (unless one is already in place, as in
# containers) and, under systemd, the unit is disabled and stopped.
apt_need_quiet() {
    local pkg=$1 cmd=$2 service=$3
    command -v "$cmd" >/dev/null 2>&1 && return 0
    local blocker=/usr/sbin/policy-rc.d ours="" rc=0
    if [ ! -e "$blocker" ]; then
        printf '#!/bin/sh\n# set by fps-switch scripts/lib/setup.sh during apt-get install\nexit 101\n' >"$blocker"
        chmod 755 "$blocker"
        ours=1
    fi
    apt_need "$pkg" "$cmd" || rc=$?
    [ -n "$ours" ] && rm -f "$blocker"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$service.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ] && "/etc/init.d/$service" status >/dev/null 2>&1; then
        "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
    return "$rc"
}

# promtool (scripts/check-monitoring: scrape config, alert rules, /metrics)
# is in the prometheus package.
setup_monitoring() {
    apt_need_quiet prometheus promtool prometheus
}

# HAProxy, the relay baseline (scripts/compare-relay, loadtest/tests/relay.rs).
setup_haproxy() {
    export PATH="$PATH:/usr/sbin:/sbin"
    apt_need_quiet haproxy haproxy haproxy
    apt_need util-linux taskset
}
