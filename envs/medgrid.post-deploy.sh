#!/usr/bin/env bash
# Run by Snakemake once inside the new conda environment, from the repository root.
exec bash scripts/install_in_conda_env.sh
