#!/usr/bin/env bash
# Competition entry point: run_defense.sh INPUT_DIR OUTPUT_FILE
#
# Runs the challenge config on ens-adv-Inception-ResNet-v2. The checkpoint, first found
# wins: $DEFENSE_CHECKPOINT (a prefix); ens_adv_inception_resnet_v2.ckpt in the
# checkpoints/ folder beside this script; in $DEFENSE_CHECKPOINT_DIR (the container sets
# /app/checkpoints). PYTHON picks the interpreter.
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_FILE" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -e "${here}/checkpoints/ens_adv_inception_resnet_v2.ckpt.index" ] || [ -z "${DEFENSE_CHECKPOINT_DIR:-}" ]; then
  export DEFENSE_CHECKPOINT_DIR="${here}/checkpoints"
fi
checkpoint=()
[ -z "${DEFENSE_CHECKPOINT:-}" ] || checkpoint=(--checkpoint_path="${DEFENSE_CHECKPOINT}")
exec "${PYTHON:-python3}" "${here}/scripts/run_defense.py" \
  --input_dir="$1" \
  --output_file="$2" \
  --config=challenge \
  --model=ens_adv_inception_resnet_v2 \
  "${checkpoint[@]}"
