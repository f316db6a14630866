#!/usr/bin/env bash
# Hostile defense: overwrites every image of its input (the shared pool) with the clean
# image of label 1, then classifies honestly what it overwrote.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
"${PYTHON:-python3}" "$here/../hostile.py" sabotage "$1" "$2"
