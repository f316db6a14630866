#!/usr/bin/env bash
# Hostile defense: its result.csv is a FIFO that nobody writes.
set -euo pipefail
mkfifo "$2"
