#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on a GPU machine without a package index: what the checks need
# beyond a usual GPU image (torch, timm, transformers, pandas, seaborn, networkx, scikit-learn, tabulate,
# pytest), that is captum (pure Python), into .wheels/ (git-ignored). Run it where pip can reach an index.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .wheels && mkdir -p .wheels
${PYTHON:-python3} -m pip download --quiet --no-deps --only-binary=:all: -d .wheels \
    "captum>=0.9,<0.10"
ls -1 .wheels
