#!/usr/bin/env bash
# Competition entry point (type attack): run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
#
# FGSM with epsilon = MAX_EPSILON on ens-adv-Inception-ResNet-v2 (no randomization).
# No labels are given: the model's own prediction on each clean image is attacked.
# Environment: PYTHON (interpreter), ATTACK_CHECKPOINT (checkpoint prefix),
# ATTACK_REPO (repository root; default: two levels up, else /app in the container),
# ATTACK_FLAGS (extra flags for scripts/generate_adversarial.py, appended last).
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_DIR MAX_EPSILON" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${ATTACK_REPO:-${here}/../..}"
[ -f "${repo}/scripts/generate_adversarial.py" ] || repo=/app
read -r -a extra <<< "${ATTACK_FLAGS:-}"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python3}" "${repo}/scripts/generate_adversarial.py" \
  --input_dir="$1" \
  --output_dir="$2" \
  --max_epsilon="$3" \
  --attack=fgsm \
  --model=ens_adv_inception_resnet_v2 \
  --checkpoint_path="${ATTACK_CHECKPOINT:-${repo}/checkpoints/ens_adv_inception_resnet_v2.ckpt}" \
  "${extra[@]}"
