#!/usr/bin/env bash
# Toy defense: decodes only the images whose green value is below 128.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" decode "$1" "$2" --half
