#!/usr/bin/env bash
# Toy defense: decodes and exits, leaving a background sleeper (its pid goes to $TOY_PIDS).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
sleep 600 &
echo $! >> "${TOY_PIDS:-/dev/null}"
"${toy[@]}" decode "$1" "$2"
