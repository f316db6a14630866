# Randomization defense (NIPS 2017 challenge entry) as a competition container.
#
#   docker build -t randomization-defense .
#   docker run --rm -v "$PWD/checkpoints:/app/checkpoints:ro" -v "$PWD/samples:/input:ro" \
#       -v "$PWD/output:/output" randomization-defense /input /output/result.csv
#
# behaves like `./run_defense.sh samples output/result.csv`; `IMAGE --help` says how to
# call it. The NIPS 2017 toolkit and the competition's cloud worker call a submission
# folder mounted at /code instead (`-v SUBMISSION:/code -w /code IMAGE ./run_defense.sh
# /input_images /output_data/result.csv`): any command runs as given, and a checkpoint in
# the submission folder's checkpoints/ wins over /app/checkpoints. Add `--gpus all` for a
# GPU.
#
# Base: plain Debian bookworm with Python 3.11, no CUDA and no TensorFlow, so that the
# `gpu` extra (tensorflow[and-cuda]: TensorFlow 2.21 with the CUDA 12 / cuDNN 9 wheels it
# is built against) installs each library once: about 6.5 GB in all, under the
# competition validator's 8 GiB. (The tensorflow/tensorflow:2.21.0-gpu base carries
# TensorFlow and an older system cuDNN; the wheels on top of it would exceed 8 GiB.)
# Without Docker Hub, build on a local stand-in: scripts/build_standin_base.sh, then
# `--build-arg BASE_IMAGE=randomization-defense-base:bookworm-py3.11`.
#
# Checkpoints are not copied in (.dockerignore): mount one, or bake one in on purpose
# with a layer on top (the context is the folder holding the checkpoint files):
#   printf 'FROM randomization-defense\nCOPY . /app/checkpoints/\n' |
#       docker build -t randomization-defense:baked -f- checkpoints/
#
# The container starts as root only to look at its output folder, then runs the command
# as uid 10001 when that user may write there, else as the folder's owner; it stays root
# only when the folder belongs to root and no one else may write there (the cloud
# worker's call), and says so (docker-entrypoint.sh). Network is needed only while
# building (pip); the defense itself never uses it.

# Pin further with a digest if wanted: --build-arg BASE_IMAGE=python@sha256:...
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# MPLCONFIGDIR holds a font cache made at build time (Keras imports matplotlib, which
# otherwise rebuilds it on every run); it is world-writable like /tmp, as matplotlib
# requires. KERAS_HOME under /tmp: writable whatever user runs. DEFENSE_CONTAINER makes
# messages name the mounts to add.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/app/.matplotlib \
    DEFENSE_CHECKPOINT_DIR=/app/checkpoints \
    DEFENSE_CONTAINER=1

WORKDIR /app

# The dependencies first, from setup.py alone (an empty project of the same name, with
# an empty README, pulls them in and is removed), so that edits elsewhere, the README's
# too, reuse this layer.
COPY setup.py pyproject.toml ./
# DL3013 reads ".[gpu]" as an unpinned package; it is this project, whose setup.py pins.
# hadolint ignore=DL3013
RUN mkdir -p configs \
    && touch README.md \
    && python3 -m pip install --no-cache-dir ".[gpu]" \
    && python3 -m pip uninstall --yes randomization-defense \
    && rm -rf build ./*.egg-info configs README.md

# The package itself (non-editable: the commands run the installed copy, with configs/
# as its package data), then the font cache.
COPY README.md ./
COPY defense/ defense/
COPY attacks/ attacks/
COPY configs/ configs/
# hadolint ignore=DL3013
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python3 -c "import matplotlib.font_manager" \
    && chmod 1777 /app/.matplotlib \
    && groupadd --gid 10001 defense \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 defense

COPY . .

ENTRYPOINT ["/app/docker-entrypoint.sh"]
