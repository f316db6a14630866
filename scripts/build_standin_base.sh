#!/usr/bin/env bash
# Build a local stand-in for the image's base (python:3.11-slim-bookworm) where Docker
# Hub cannot be reached:  scripts/build_standin_base.sh [TAG]   (default TAG below).
#
# A Debian bookworm root made with debootstrap from Debian's own mirror, with Python 3.11,
# pip and this host's CA bundle, imported into the local engine with `docker import`.
# Then:  docker build --network=host --build-arg BASE_IMAGE=TAG -t randomization-defense .
# Needs root, debootstrap and a running Docker engine. Does nothing if TAG exists.
set -euo pipefail
tag="${1:-randomization-defense-base:bookworm-py3.11}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "stand-in base $tag already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "build_standin_base: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build_standin_base: debootstrap needs root" >&2; exit 2; }

root="$(mktemp -d /var/tmp/standin-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# As in the official Python images: pip may install into the system interpreter.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3 "$root/usr/bin/python"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "stand-in base $tag built"
