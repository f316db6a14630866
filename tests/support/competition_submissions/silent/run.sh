#!/usr/bin/env bash
# Toy defense: writes nothing and exits 0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
exit 0
