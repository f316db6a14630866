#!/usr/bin/env bash
# Install into .venv, fetch the ens-adv-Inception-ResNet-v2 checkpoint, classify samples/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
if ! .venv/bin/python scripts/download_checkpoints.py ens_adv_inception_resnet_v2; then
  echo "quickstart: the checkpoint is not available; follow the instructions above, then run ./quickstart.sh again." >&2
  exit 2
fi
mkdir -p output
.venv/bin/python scripts/run_defense.py --input_dir=samples --output_file=output/samples.csv --class_names
echo "labels written to output/samples.csv:"
cat output/samples.csv
