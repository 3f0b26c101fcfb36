#!/usr/bin/env bash
# Everything the tests need from Debian, in one place: the README's test
# command runs this script, and so does CI (.ci/run runs that command).
#
# Idempotent: installs only what is missing (apt-get update runs once, and
# only then), as root or through sudo. To add a service the tests need, add
# one "command:package" word to NEEDS.
#
#   prometheus  tests/test_prometheus.py scrapes a real `supervisor run`
#   tmux        tests/test_terminal.py reads the live status line off a real terminal
#   prometheus-alertmanager  tests/test_alerts_delivery.py posts alerts to a real Alertmanager
#               (promtool, from the prometheus package, checks deploy/prometheus/alerts.yml)
#   chromium, chromedriver  the dashboard's browser tests drive a real headless Chromium
#   redis-server  the fleet registry and control plane tests start a throwaway Redis
#   initdb      the PostgreSQL datastore tests start a throwaway cluster (postgresql's
#               binaries live in /usr/lib/postgresql/N/bin: see pg_bin below)
set -euo pipefail

NEEDS=(
  "prometheus:prometheus"
  "tmux:tmux"
  "prometheus-alertmanager:prometheus-alertmanager"
  "chromium:chromium"
  "chromedriver:chromium-driver"
  "redis-server:redis-server"
  "pg_bin_initdb:postgresql"
)

# PostgreSQL's server binaries are not on PATH on Debian: look for initdb in
# its versioned directory.
pg_bin_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have() {
  if [ "$1" = pg_bin_initdb ]; then pg_bin_initdb; else command -v "$1" >/dev/null 2>&1; fi
}

missing=()
for need in "${NEEDS[@]}"; do
  have "${need%%:*}" || missing+=("${need#*:}")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "services.sh: need root or sudo to install: ${missing[*]}" >&2
      exit 1
    fi
    SUDO=sudo
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "services.sh: no apt-get here; install these yourself: ${missing[*]}" >&2
    exit 1
  fi
  echo "services.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # The tests start their own Prometheus: stop the one the package may have
  # enabled (containers without systemd never start it: no init).
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

for need in "${NEEDS[@]}"; do
  have "${need%%:*}" || {
    echo "services.sh: ${need%%:*} is still missing after the install" >&2
    exit 1
  }
done
echo "services.sh: $(prometheus --version 2>&1 | sed -n 1p); $(tmux -V);" \
  "$(prometheus-alertmanager --version 2>&1 | sed -n 1p);" \
  "$(chromium --version 2>/dev/null); $(redis-server --version | cut -d' ' -f1-3);" \
  "$(ls -d /usr/lib/postgresql/*/bin | head -1)"
