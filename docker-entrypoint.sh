#!/usr/bin/env bash
# Container entry point; `IMAGE --help` prints the calls it takes (usage below).
#
# Who runs the command: a container started with --user runs as that user. Started as
# root (no --user, as the NIPS 2017 toolkit and the cloud worker call it), it looks at
# the output folder (the second argument, or the folder of the output file) and drops
# to uid 10001 when that user may write there, else to the folder's owner; it stays
# root only when the folder belongs to root and only root may write there, or when the
# container may not change users (--cap-drop ALL), and says so on stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
unprivileged=10001

usage() {
  cat <<'EOF'
Randomization defense (Xie et al., ICLR 2018; NIPS 2017 challenge entry), two ways to call:

  The defense on a folder of PNGs, as ./run_defense.sh does:
    docker run --rm -v /path/to/checkpoints:/app/checkpoints:ro \
        -v /path/to/images:/input:ro -v /path/to/output:/output \
        IMAGE /input /output/result.csv

  A submission folder, as the NIPS 2017 toolkit and the competition's cloud worker call it
  (any command runs as given):
    docker run -v SUBMISSION:/code -w /code -v IMAGES:/input_images:ro \
        -v OUTPUT:/output_data IMAGE ./run_defense.sh /input_images /output_data/result.csv
    docker run -v SUBMISSION:/code -w /code -v IMAGES:/input_images:ro \
        -v OUTPUT:/output_images IMAGE ./run_attack.sh /input_images /output_images EPSILON

Checkpoint (ens_adv_inception_resnet_v2.ckpt), first found wins: checkpoints/ beside the
entry point (the submission folder's, /code/checkpoints, under the toolkit's call), then
/app/checkpoints (mount a folder holding it there, read-only).
Output: written as uid 10001 when it may write the output folder, else as the folder's
owner, else as root (said on stderr); --user UID:GID runs as that user instead.
A read-only root (--read-only) needs a writable /tmp: --tmpfs /tmp. Add --gpus all for GPUs.
EOF
}

if [ "$#" -eq 0 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  usage
  [ "$#" -gt 0 ] || exit 2
  exit 0
fi

# A given command (an executable file, or a command name) runs as given; otherwise the
# arguments are run_defense.sh's.
if { [ -f "$1" ] && [ -x "$1" ]; } || { [[ "$1" != */* ]] && command -v "$1" >/dev/null; }; then
  command=("$@")
  output="${3:-}"
else
  command=("${here}/run_defense.sh" "$@")
  output="${2:-}"
fi

say() { echo "docker-entrypoint: $*" >&2; }

# On a read-only root (--read-only --tmpfs /tmp) the font cache made at build time is
# copied to a writable folder, or matplotlib would rebuild it and warn on every run.
if [ -n "${MPLCONFIGDIR:-}" ] && [ -d "$MPLCONFIGDIR" ] && [ ! -w "$MPLCONFIGDIR" ] \
  && cache="$(mktemp -d 2>/dev/null)"; then
  cp -R "$MPLCONFIGDIR/." "$cache/" && chmod -R a+rX "$cache" && chmod 1777 "$cache"
  export MPLCONFIGDIR="$cache"
fi
as_user() { setpriv --reuid="$1" --regid="$2" --clear-groups -- "${@:3}"; }

if [ "$(id -u)" -ne 0 ]; then
  exec "${command[@]}"
fi
folder="$output"
[ -z "$folder" ] || [ -d "$folder" ] || folder="$(dirname -- "$folder")"
if ! as_user "$unprivileged" "$unprivileged" true 2>/dev/null; then
  say "running as root: this container may not change users (was it started with --cap-drop ALL? add --user UID:GID)"
  exec "${command[@]}"
fi
if [ -z "$folder" ] || [ ! -d "$folder" ] || [ ! -w "$folder" ] \
  || as_user "$unprivileged" "$unprivileged" test -w "$folder"; then
  # Nothing root could write either (the command reports the problem), or uid 10001 may.
  exec setpriv --reuid="$unprivileged" --regid="$unprivileged" --clear-groups -- "${command[@]}"
fi
owner="$(stat -c %u "$folder")"
group="$(stat -c %g "$folder")"
if [ "$owner" -ne 0 ] && as_user "$owner" "$group" test -w "$folder"; then
  exec setpriv --reuid="$owner" --regid="$group" --clear-groups -- "${command[@]}"
fi
say "running as root: only root may write ${folder} (add --user UID:GID, or make it writable for uid ${unprivileged}, to run unprivileged)"
exec "${command[@]}"
