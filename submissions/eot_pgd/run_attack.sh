#!/usr/bin/env bash
# Competition entry point (type attack): run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
#
# EOT-PGD (10 steps of MAX_EPSILON / 8, 30 random patterns per gradient) on the
# challenge defense itself: ens-adv-Inception-ResNet-v2 behind the challenge config.
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
  --attack=eot_pgd \
  --config=challenge \
  --steps=10 \
  --samples=30 \
  --chunk_size=15 \
  --batch_size=8 \
  --model=ens_adv_inception_resnet_v2 \
  --checkpoint_path="${ATTACK_CHECKPOINT:-${repo}/checkpoints/ens_adv_inception_resnet_v2.ckpt}" \
  "${extra[@]}"
