#!/usr/bin/env bash
# Run by Snakemake once inside the new conda environment, from the repository root. MEDGRID_FORCE_CUDA=1: the
# extension is built with its CUDA kernels or the environment is not made (no CPU-only build for GPU jobs).
MEDGRID_FORCE_CUDA=1 exec bash scripts/install_in_conda_env.sh --require-cuda
