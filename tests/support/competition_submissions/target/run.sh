#!/usr/bin/env bash
# Toy targeted attack: moves the red value to the target class bin centre.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${toy[@]}" target "$1" "$2"
