#!/usr/bin/env bash
# Toy defense: the label is R // 32 + 1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" decode "$1" "$2"
