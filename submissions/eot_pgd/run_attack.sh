#!/usr/bin/env bash
# Competition entry point (type attack): run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
#
# EOT-PGD (10 steps of MAX_EPSILON / 8, 30 random patterns per gradient) on the
# challenge defense itself: ens-adv-Inception-ResNet-v2 behind the challenge config.
# No labels are given: the model's own prediction on each clean image is attacked.
# Environment: ATTACK_REPO (repository root; default: two levels up, else /app in the
# container), and those of ../run_generate.sh (PYTHON, ATTACK_CHECKPOINT, ATTACK_FLAGS).
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 INPUT_DIR OUTPUT_DIR MAX_EPSILON" >&2
  exit 2
fi
SUBMISSION_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export SUBMISSION_DIR
repo="${ATTACK_REPO:-$(cd "${SUBMISSION_DIR}/../.." && pwd)}"
[ -x "${repo}/submissions/run_generate.sh" ] || repo=/app
exec "${repo}/submissions/run_generate.sh" "$@" \
  --attack=eot_pgd \
  --config=challenge \
  --steps=10 \
  --samples=30 \
  --chunk_size=15 \
  --batch_size=8
