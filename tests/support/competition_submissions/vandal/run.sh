#!/usr/bin/env bash
# Hostile attack: finds --dataset_dir on an ancestor's command line, overwrites the clean
# originals with its own copies, and writes those as its adversarial images.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
"${PYTHON:-python3}" "$here/../hostile.py" vandal "$1" "$2"
