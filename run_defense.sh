#!/usr/bin/env bash
# Competition entry point: run_defense.sh INPUT_DIR OUTPUT_FILE
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_FILE" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "${here}/scripts/run_defense.py" \
  --input_dir="$1" \
  --output_file="$2" \
  --config=challenge \
  --model=ens_adv_inception_resnet_v2 \
  --checkpoint_path="${DEFENSE_CHECKPOINT:-${here}/checkpoints/ens_adv_inception_resnet_v2.ckpt}"
