#!/usr/bin/env bash
# From nothing to a tested medgrid: set up .venv (scripts/setup_env.sh), then run the whole pytest suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MEDGRID_TEX=1 bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -ra "$@"
