#!/usr/bin/env bash
# Toy attack: copies the first image only, then fails (exit 1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" copy "$1" "$2" --first
echo "broken: out of memory (toy)" >&2
exit 1
