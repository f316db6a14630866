#!/usr/bin/env bash
# Hostile defense: classifies, then leaves a double-forked, setsid'd sleeper with a
# cleared environment (its pid goes to $TOY_PIDS) and exits.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" decode "$1" "$2"
"${PYTHON:-python3}" "$here/../hostile.py" daemon "$1" "$2"
