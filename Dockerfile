# Randomization defense (NIPS 2017 challenge entry) as a competition container.
#
#   docker build -t randomization-defense .
#   docker run --rm -v "$PWD/samples:/input:ro" -v "$PWD/output:/output" \
#       randomization-defense /input /output/result.csv
#
# behaves like `./run_defense.sh samples output/result.csv`. Add `--gpus all` to use a GPU.
# A command instead of arguments runs that command, which is how the NIPS 2017 toolkit
# calls submissions mounted at /code:  IMAGE ./run_attack.sh INPUT OUTPUT MAX_EPSILON
# Whatever is in checkpoints/ at build time is baked in. Without a baked-in checkpoint,
# mount one read-only over it:  -v /path/to/checkpoints:/app/checkpoints:ro
# (DEFENSE_CHECKPOINT_DIR below is where every command looks for checkpoints).
# The container runs as an unprivileged user: the output directory must be writable by
# it (e.g. add `--user "$(id -u):$(id -g)"` to write as yourself).
# Network is needed only while building (pip); the defense itself never uses it.

# Pin further with a digest if wanted: --build-arg BASE_IMAGE=tensorflow/tensorflow@sha256:...
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# KERAS_HOME and MPLCONFIGDIR (Keras imports matplotlib) under /tmp: writable whatever
# --user the container runs as. DEFENSE_CONTAINER makes a missing checkpoint's message
# name the mount to add.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/tmp/.matplotlib \
    DEFENSE_CHECKPOINT_DIR=/app/checkpoints \
    DEFENSE_CONTAINER=1

WORKDIR /app

# Install the package (non-editable: the commands run the installed copy, with configs/
# as its package data) and its pinned dependencies first (the base image already has
# TensorFlow 2.21), so that edits elsewhere in the repo reuse this layer. The `gpu`
# extra adds the CUDA 12 / cuDNN 9 wheels TensorFlow 2.21 is built against, which
# TensorFlow loads before the base image's system libraries (reported to carry cuDNN 8.9).
COPY setup.py pyproject.toml README.md ./
COPY defense/ defense/
COPY attacks/ attacks/
COPY configs/ configs/
# DL3013 reads ".[gpu]" as an unpinned package; it is this project, whose setup.py pins.
# hadolint ignore=DL3013
RUN python3 -m pip install --no-cache-dir ".[gpu]" \
    && rm -rf build ./*.egg-info

COPY . .

# Numeric IDs, so that the host and orchestrators can tell the user is not root.
RUN groupadd --gid 10001 defense \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 defense
USER 10001:10001

ENTRYPOINT ["/app/docker-entrypoint.sh"]
