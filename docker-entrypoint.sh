#!/usr/bin/env bash
# Container entry point. `IMAGE INPUT_DIR OUTPUT_FILE` runs the defense, as
# run_defense.sh does; `IMAGE ./run_attack.sh ...` or any other command (how the
# NIPS 2017 toolkit calls a submission mounted at /code) runs that command.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$#" -gt 0 ] && { { [ -f "$1" ] && [ -x "$1" ]; } || { [[ "$1" != */* ]] && command -v "$1" >/dev/null; }; }; then
  exec "$@"
fi
exec "${here}/run_defense.sh" "$@"
