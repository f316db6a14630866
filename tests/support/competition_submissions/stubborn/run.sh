#!/usr/bin/env bash
# Toy defense: ignores SIGTERM, decodes, then hangs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
trap '' TERM
"${toy[@]}" decode "$1" "$2"
sleep 600
