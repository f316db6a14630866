#!/usr/bin/env bash
# Toy defense: decodes, with a header row, a malformed row per image and an unknown name.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" decode "$1" "$2" --messy
