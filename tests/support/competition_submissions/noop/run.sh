#!/usr/bin/env bash
# Toy attack: copies every image unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" copy "$1" "$2"
