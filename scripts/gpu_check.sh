#!/usr/bin/env bash
# Every GPU claim of the README in one call: scripts/gpu_check.sh OUT_DIR [--cifar DIR] [--budget S] [--cpu]
# writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (attnbench/gpu_check.py says what each check measures).
# --cpu is the seconds-long dry run that `make test` runs; without a GPU and without --cpu it refuses (exit 2).
set -euo pipefail
exec "${PYTHON:-python}" -m attnbench.gpu_check "$@"
