#!/usr/bin/env bash
# Hostile attack: copies its input, then overwrites the other attacks' clipped images.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
"${PYTHON:-python3}" "$here/../toy.py" copy "$1" "$2"
"${PYTHON:-python3}" "$here/../hostile.py" clip "$1" "$2"
