#!/usr/bin/env bash
# Run by Snakemake once, inside the freshly created conda environment, from the working directory
# (the repository root): install medgrid itself, editable, built against the environment's torch.
# Its dependencies are in the environment file; --no-deps keeps pip from fetching them again.
set -euo pipefail
if ! grep -qs 'name="medgrid"' setup.py; then
    echo "$0: no medgrid setup.py in $PWD; run snakemake from the medgrid repository root" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation -e .
