# shellcheck shell=bash disable=SC2034
# Shared by every script in scripts/: where things live and how to enter the environment.
#
# Two environments:
#   * the Python environment (venv with the project, its dev tools and Home Assistant's test plugin):
#     a host venv when the host has CPython >= 3.14.2, otherwise a venv inside the Debian-testing
#     root filesystem, entered with bubblewrap;
#   * the rootfs itself, always used for the services (Redis, PostgreSQL 18 + TimescaleDB, Java for
#     Kafka) and, in rootfs mode, for Python.
# The host/rootfs difference lives here (and in scripts/shell) and nowhere else.
#
# Environment overrides:
#   PRIME_SPARK_CACHE        cache root (rootfs, pip/maven caches, Kafka jars)  [/var/cache/prime-spark]
#   PRIME_SPARK_ROOTFS       rootfs directory                                   [$PRIME_SPARK_CACHE/rootfs]
#   PRIME_SPARK_STATE        service state (data, logs, pid files)              [/var/lib/prime-spark/services]
#   PRIME_SPARK_PYTHON_MODE  auto | host | rootfs                                [auto]
#   PRIME_SPARK_HOST_PYTHON  host interpreter to consider for host mode
#   PRIME_SPARK_VENV         venv path (as seen by the Python environment)      [/opt/prime-spark/venv]
#   PRIME_SPARK_HA_LANE_PYTHON  CPython 3.13 of the HA 2025.4.4 test lane
#                            [/root/.pyenv/versions/3.13.0/bin/python3.13]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SCRIPTS="$REPO_ROOT/scripts"
PRIME_SPARK_CACHE="${PRIME_SPARK_CACHE:-/var/cache/prime-spark}"
ROOTFS="${PRIME_SPARK_ROOTFS:-$PRIME_SPARK_CACHE/rootfs}"
PIP_CACHE="${PRIME_SPARK_PIP_CACHE:-$PRIME_SPARK_CACHE/pip}"
M2_CACHE="$PRIME_SPARK_CACHE/m2"
STATE_DIR="${PRIME_SPARK_STATE:-/var/lib/prime-spark/services}"
VENV="${PRIME_SPARK_VENV:-/opt/prime-spark/venv}"
ROOTFS_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Second Home Assistant test lane: our declared minimum (hacs.json, manifest) on the host's Python
# 3.13.0, in a host venv without the server (llama-cpp-python); its tests start the server through
# scripts/shell. HA_LANE_PHCC is the pytest-homeassistant-custom-component release that pins
# exactly homeassistant==$HA_LANE_VERSION.
HA_LANE_VERSION=2025.4.4
HA_LANE_PHCC=0.13.236
HA_LANE_PYTHON="${PRIME_SPARK_HA_LANE_PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3.13}"
HA_LANE_VENV="$PRIME_SPARK_CACHE/venv-ha-$HA_LANE_VERSION"

# scripts/develop: a Home Assistant dev instance in a venv of its own (HA plus what its default
# integrations need, which must not change the test venv), state in the repo's .develop/.
DEVELOP_VENV="${VENV%/}-develop"
DEVELOP_DIR="$REPO_ROOT/.develop"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A host interpreter >= 3.14.2, or nothing.
_host_python() {
  local c
  for c in ${PRIME_SPARK_HOST_PYTHON:-} python3.14 /usr/local/bin/python3.14 /root/.pyenv/versions/3.14*/bin/python3.14; do
    [ -n "$c" ] || continue
    c="$(command -v "$c" 2>/dev/null)" || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 14, 2) else 1)' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

case "${PRIME_SPARK_PYTHON_MODE:-auto}" in
  host) PY_MODE=host; HOST_PYTHON="$(_host_python)" || die "PRIME_SPARK_PYTHON_MODE=host but no host python >= 3.14.2" ;;
  rootfs) PY_MODE=rootfs; HOST_PYTHON="" ;;
  auto) if HOST_PYTHON="$(_host_python)"; then PY_MODE=host; else PY_MODE=rootfs; HOST_PYTHON=""; fi ;;
  *) die "PRIME_SPARK_PYTHON_MODE must be auto, host or rootfs" ;;
esac

# The venv directory as seen from the host (for stamps and existence checks).
if [ "$PY_MODE" = host ]; then VENV_ON_HOST="$VENV"; else VENV_ON_HOST="$ROOTFS$VENV"; fi

# Run a command inside the rootfs (bubblewrap, host network, same pid namespace, no daemons left
# to bwrap: processes may outlive it). Binds the repo, /tmp, the state dir and the cwd at the same
# paths; caches at root's cache dirs. Environment passes through except what the rootfs must own.
rootfs_exec() {
  [ -x "$ROOTFS/usr/bin/env" ] || die "rootfs $ROOTFS missing: run scripts/setup"
  mkdir -p "$PIP_CACHE" "$M2_CACHE" "$STATE_DIR"
  local cwd="$PWD" args
  args=(--bind "$ROOTFS" / --proc /proc --dev /dev
        --ro-bind /etc/resolv.conf /etc/resolv.conf --ro-bind /etc/hosts /etc/hosts
        --bind /tmp /tmp --bind "$STATE_DIR" "$STATE_DIR" --bind "$REPO_ROOT" "$REPO_ROOT")
  case "$cwd" in
    "$REPO_ROOT" | "$REPO_ROOT"/* | /tmp | /tmp/* | "$STATE_DIR" | "$STATE_DIR"/*) ;;
    / | /root | /usr | /usr/* | /etc | /etc/* | /var | /opt | /bin | /sbin | /lib* | /proc* | /dev* | /sys* | /run*) ;;
    *) args+=(--bind "$cwd" "$cwd") ;;
  esac
  [ -d "$ROOTFS$cwd" ] || [ -d "$cwd" ] || cwd=/
  # Mount points made by bwrap get mode 0700 parents; make them here (0755) so that service users
  # (postgres) can reach the state dir.
  local a
  for a in "$STATE_DIR" "$REPO_ROOT" /root/.cache/pip /root/.m2; do
    [ -d "$ROOTFS$a" ] || (umask 022 && mkdir -p "$ROOTFS$a")
  done
  args+=(--bind "$PIP_CACHE" /root/.cache/pip --bind "$M2_CACHE" /root/.m2 --chdir "$cwd")
  # The host's PIP_FIND_LINKS holds wheels for the host python, not for this one.
  exec bwrap "${args[@]}" /usr/bin/env -u PYTHONHOME -u PYTHONPATH -u PIP_FIND_LINKS -u LC_ALL -u LANGUAGE \
    LANG=C.UTF-8 HOME=/root "$@"
}

# Run a command in the Python environment (venv first on PATH).
python_exec() { venv_exec "$VENV" "$@"; }
# Same with another venv of that environment (scripts/develop's Home Assistant: DEVELOP_VENV).
venv_exec() {
  local venv="$1"
  shift
  if [ "$PY_MODE" = host ]; then
    exec env -u PYTHONHOME PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" "$@"
  fi
  rootfs_exec PATH="$venv/bin:$ROOTFS_PATH" VIRTUAL_ENV="$venv" "$@"
}

# Same, in a subshell (returns instead of replacing the caller).
in_python() { (python_exec "$@"); }
in_rootfs() { (rootfs_exec PATH="$ROOTFS_PATH" "$@"); }
# In the Python environment, but with the dev instance's venv (scripts/develop).
in_develop_python() { (venv_exec "$DEVELOP_VENV" "$@"); }

# The server reads PRIME_SPARK_<SECTION>__<KEY> settings from its environment and refuses other
# PRIME_SPARK_* names, such as the overrides above: call this in the subshell that starts it
# (unset only there: this file has read them already).
drop_script_env() {
  local n
  for n in $(compgen -e); do
    case "$n" in PRIME_SPARK_CONFIG | PRIME_SPARK_*__*) ;; PRIME_SPARK_*) unset "$n" ;; esac
  done
}

# Seconds since the epoch with decimals, and a duration printer.
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1fs", e - s }'; }
