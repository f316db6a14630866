#!/usr/bin/env bash
# Competition entry point: run_defense.sh INPUT_DIR OUTPUT_FILE
#
# Runs the challenge config on ens-adv-Inception-ResNet-v2. The checkpoint is
# $DEFENSE_CHECKPOINT (a prefix) if set, else ens_adv_inception_resnet_v2.ckpt in
# $DEFENSE_CHECKPOINT_DIR (the container sets /app/checkpoints), else in the
# checkpoints/ folder beside this script. PYTHON picks the interpreter.
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_FILE" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEFENSE_CHECKPOINT_DIR="${DEFENSE_CHECKPOINT_DIR:-${here}/checkpoints}"
checkpoint=()
[ -z "${DEFENSE_CHECKPOINT:-}" ] || checkpoint=(--checkpoint_path="${DEFENSE_CHECKPOINT}")
exec "${PYTHON:-python3}" "${here}/scripts/run_defense.py" \
  --input_dir="$1" \
  --output_file="$2" \
  --config=challenge \
  --model=ens_adv_inception_resnet_v2 \
  "${checkpoint[@]}"
