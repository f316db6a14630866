#!/usr/bin/env bash
# Toy attack: adds 16 to every channel of every pixel (saturating at 255).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" offset "$1" "$2" 16
