#!/usr/bin/env bash
# Install medgrid itself, editable, into the active conda environment, built against the environment's
# torch. Called by every envs/*.post-deploy.sh, which Snakemake runs once inside each new environment
# from the working directory (the repository root). The dependencies are in the environment file;
# --no-deps keeps pip from fetching them again. Ends with `medgrid info` (what was built; its arguments,
# e.g. --require-cuda, are this script's).
set -euo pipefail
if ! grep -qs 'name="medgrid"' setup.py; then
    echo "$0: no medgrid setup.py in $PWD; run snakemake from the medgrid repository root" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation -e .
# Square, the black-box attack of the gradient-masking checks (its metadata pins an ancient requests it never uses)
python -m pip install --no-deps torchattacks==3.5.1
# what was built, in Snakemake's output where the env is created (fails with --require-cuda and no CUDA kernels)
medgrid info "$@"
