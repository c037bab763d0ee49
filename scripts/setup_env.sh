#!/usr/bin/env bash
# Create (or update) the project virtualenv .venv from nothing: system libraries, torch, medgrid and its extras.
# Used by scripts/demo.sh and scripts/test.sh. Override with:
#   MEDGRID_VENV=path        where the virtualenv lives (default .venv)
#   MEDGRID_TORCH="..."      pip requirement(s) for torch (default: torch==2.14.1 torchvision==0.29.1)
#   MEDGRID_APT=0            do not apt-get system packages (ImageMagick for medmnistc, pdflatex for the tests)
#   MEDGRID_TEX=1            also install pdflatex (scripts/test.sh sets it: only a test compiles the LaTeX table)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${MEDGRID_VENV:-.venv}
TORCH_SPEC=${MEDGRID_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

if [ "${MEDGRID_APT:-1}" = "1" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    if ! dpkg -s libmagickwand-dev >/dev/null 2>&1; then
        echo "== apt-get install libmagickwand-dev (ImageMagick for medmnistc)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmagickwand-dev >/dev/null
    fi
    if [ "${MEDGRID_TEX:-0}" = "1" ] && ! command -v pdflatex >/dev/null; then
        # about 45 s with apt-get update (measured): the headline table's LaTeX is compiled in the tests
        echo "== apt-get install texlive-latex-recommended (pdflatex and booktabs for the headline table)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            texlive-latex-base texlive-latex-recommended >/dev/null
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip setuptools wheel
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    echo "== installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q $TORCH_SPEC
fi
echo "== installing medgrid (builds the medgrid._C extension against the installed torch)"
"$PY" -m pip install -q pybind11 ninja
"$PY" -m pip install -q --no-build-isolation -e ".[test,report,shift,slurm]"
# torchattacks: Square for the black-box check (and an independent APGD for the tests); its metadata pins an
# ancient requests that it never imports, so it goes in without its dependencies
"$PY" -m pip install -q --no-deps torchattacks==3.5.1
"$PY" -c "import medgrid.ops as o; print('medgrid fused PGD step:', 'built' if o.fused_available() else 'NOT built (reference)')"
