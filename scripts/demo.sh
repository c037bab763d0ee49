#!/usr/bin/env bash
# From nothing to the offline demo: set up .venv, run the demo grid (synthetic tasks) and build the report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${MEDGRID_NO_CUDA:-}" ] && ! nvidia-smi -L >/dev/null 2>&1; then
    # the demo runs here, on the CPU: CUDA kernels (a minute of nvcc) would never run; scripts/setup_env.sh
    # alone builds them wherever nvcc is found (README, On GPUs and clusters)
    echo "== no GPU visible: building medgrid's CPU kernels only (MEDGRID_NO_CUDA=1)"
    export MEDGRID_NO_CUDA=1
fi
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores all --configfile config/demo.yaml "$@"
snakemake --cores all --configfile config/demo.yaml --report results/report.html
echo "demo done: results/summary.parquet, results/charts/, results/report.html"
