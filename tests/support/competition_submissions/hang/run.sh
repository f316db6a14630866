#!/usr/bin/env bash
# Toy attack: copies the first image, then hangs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" copy "$1" "$2" --first
sleep 600
