#!/usr/bin/env bash
# Shared body of the attack submissions: run_generate.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON FLAG...
#
# Runs generate_adversarial (the installed package) on ens-adv-Inception-ResNet-v2
# with the submission's FLAGs, clipping outputs to MAX_EPSILON as the competition does.
# Environment: PYTHON (interpreter), ATTACK_FLAGS (extra flags for generate_adversarial,
# appended last). The checkpoint, first found wins (as in run_defense.sh):
# $ATTACK_CHECKPOINT (a prefix); ens_adv_inception_resnet_v2.ckpt in the checkpoints/
# folder beside the submission's entry point ($SUBMISSION_DIR, which run_attack.sh sets);
# in $DEFENSE_CHECKPOINT_DIR (the container sets /app/checkpoints); in the repository's
# checkpoints/.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_DIR MAX_EPSILON FLAG..." >&2
  exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a extra <<< "${ATTACK_FLAGS:-}"
if [ -n "${SUBMISSION_DIR:-}" ] && [ -e "${SUBMISSION_DIR}/checkpoints/ens_adv_inception_resnet_v2.ckpt.index" ]; then
  export DEFENSE_CHECKPOINT_DIR="${SUBMISSION_DIR}/checkpoints"
fi
export DEFENSE_CHECKPOINT_DIR="${DEFENSE_CHECKPOINT_DIR:-${repo}/checkpoints}"
checkpoint=()
[ -z "${ATTACK_CHECKPOINT:-}" ] || checkpoint=(--checkpoint_path="${ATTACK_CHECKPOINT}")
exec "${PYTHON:-python3}" "${repo}/scripts/generate_adversarial.py" \
  --input_dir="$1" \
  --output_dir="$2" \
  --max_epsilon="$3" \
  --model=ens_adv_inception_resnet_v2 \
  "${checkpoint[@]}" \
  "${@:4}" \
  "${extra[@]}"
