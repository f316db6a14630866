#!/usr/bin/env bash
# Toy defense: decodes, then hangs (its pid goes to $TOY_PIDS).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
echo $$ >> "${TOY_PIDS:-/dev/null}"
"${toy[@]}" decode "$1" "$2"
sleep 600
