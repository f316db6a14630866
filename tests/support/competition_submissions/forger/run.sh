#!/usr/bin/env bash
# Hostile defense: classifies honestly, then rewrites the other defenses' piece.json
# records so that every label they hold is 1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" decode "$1" "$2"
"${PYTHON:-python3}" "$here/../hostile.py" forge "$1" "$2"
