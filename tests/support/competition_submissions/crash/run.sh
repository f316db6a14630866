#!/usr/bin/env bash
# Toy defense: writes nothing and crashes (exit 3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
echo "crash: segmentation fault (toy)" >&2
exit 3
