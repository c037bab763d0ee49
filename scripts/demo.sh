#!/usr/bin/env bash
# From nothing to the offline demo: set up .venv, run the demo grid (synthetic tasks) and build the report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores all --configfile config/demo.yaml "$@"
snakemake --cores all --configfile config/demo.yaml --report results/report.html
echo "demo done: results/summary.parquet, results/charts/, results/report.html"
