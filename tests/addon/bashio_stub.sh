# shellcheck shell=bash
# A stand-in for bashio (the add-on base image's bash library), for running the add-on's s6
# scripts with plain bash in tests. Same function names and the same Supervisor calls: options
# come from ${ADDON_DATA_DIR}/options.json, discovery is POSTed to
# ${__BASHIO_SUPERVISOR_API:-http://supervisor}/discovery with SUPERVISOR_TOKEN, as bashio does.

bashio::log.info() { echo "[info] $*" >&2; }
bashio::log.warning() { echo "[warning] $*" >&2; }
bashio::log.error() { echo "[error] $*" >&2; }
bashio::exit.nok() { echo "[fatal] $*" >&2; exit 1; }
bashio::fs.file_exists() { [[ -f "$1" ]]; }

bashio::config() {
  jq -r --arg key "$1" '.[$key] // empty' "${ADDON_DATA_DIR:-/data}/options.json"
}
bashio::config.has_value() { [[ -n "$(bashio::config "$1")" ]]; }

# key value [key value ...]; a value starting with ^ is raw JSON (numbers, booleans).
bashio::var.json() {
  local json='{}'
  while [[ $# -gt 1 ]]; do
    if [[ "$2" == ^* ]]; then
      json=$(jq -c --arg k "$1" --argjson v "${2:1}" '. + {($k): $v}' <<< "${json}")
    else
      json=$(jq -c --arg k "$1" --arg v "$2" '. + {($k): $v}' <<< "${json}")
    fi
    shift 2
  done
  echo "${json}"
}

bashio::discovery() {
  local payload response
  payload=$(jq -c -n --arg service "$1" --argjson config "$2" '{service: $service, config: $config}')
  response=$(curl -fsS -X POST \
    -H "Authorization: Bearer ${SUPERVISOR_TOKEN}" \
    -H "Content-Type: application/json" \
    --data "${payload}" \
    "${__BASHIO_SUPERVISOR_API:-http://supervisor}/discovery") || return 1
  jq -r '.data.uuid' <<< "${response}"
}
