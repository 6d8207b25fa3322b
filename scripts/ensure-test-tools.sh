#!/usr/bin/env bash
# Installs what the tests use besides PostgreSQL, from Debian, if absent:
# promtool (package prometheus) to lint /metrics and the alert rules, and
# Chromium + ChromeDriver to test /dashboard in a headless browser, and
# HAProxy to test several routers behind a TCP load balancer.
# Idempotent; run by scripts/test.sh.
set -euo pipefail
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "Installing ${missing[*]} from Debian..."
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
