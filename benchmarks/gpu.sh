#!/usr/bin/env bash
# One prepared run for a GPU machine (written for one H200; steps 1-5 under 6 minutes, step 6 at most 200 s):
#   1. build medgrid._C with its CUDA kernels against the torch already installed there (medgrid's default GPU
#      list unless TORCH_CUDA_ARCH_LIST is set), then `medgrid info --require-cuda`: fails when the library has
#      no CUDA kernels or none that this GPU runs
#   2. a compute-sanitizer memcheck of the kernels (skipped when the tool is missing)
#   3. pytest tests/test_ops.py (the CUDA tests run when a GPU is visible)
#   4. benchmarks/pgd_step.py --device cuda, float32 and bfloat16 (and the CPU kernel on all cores)
#   5. benchmarks/pgd_attack.py --device cuda (cnn-small and resnet18; skip/fused variants, torchattacks,
#      and the update step's share of one PGD iteration, eager vs fused)
#   6. one small cell end to end on the GPU through the command line (data on the device): a synthetic
#      task, standard and L-inf training, evaluation with the strong evaluation and the masking checks,
#      the Ilyas datasets and a model trained on D_rand (E2E_DEVICE=cpu runs the same step on a CPU)
#   7. benchmarks/memory.py at 224 px with the images in pinned host memory (--data-on host: batches
#      streamed to the GPU), when medgrid's other dependencies (pandas, pyarrow, sklearn, tqdm) are there
# Logs and JSON go to $OUT when set (else benchmarks/out): gpu_sh.log (this script's whole output),
# build.log, memcheck.log and one JSON per benchmark run: 8 files (the device tool returns 8).
# Exit status: non-zero when a step failed; every step runs regardless, so one failure does not
# hide the others' results.
#
#   bash benchmarks/gpu.sh                       # from the repository root
#   PYTHON=/opt/venv/bin/python OUT=/tmp/o bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_sh.log") 2>&1
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export MEDGRID_FORCE_CUDA=1                                 # fail the build rather than fall back to CPU
unset MEDGRID_NO_EXT MEDGRID_FUSED
status=0
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s elapsed)"; }
fail() { echo "!!! FAILED: $*"; status=1; }

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
command -v nvcc && nvcc --version | tail -2

step "1. build (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-unset: the default list}, MAX_JOBS=$MAX_JOBS)"
# --no-deps/--no-index: the machine has no registry; medgrid's other dependencies are not
# needed by the op, its tests or this benchmark.
if ! timeout 240 $PY -m pip install -v --no-build-isolation --no-deps --no-index -e . >"$OUT/build.log" 2>&1; then
    echo "pip install -e . failed (tail of $OUT/build.log below); trying setup.py build_ext --inplace"
    tail -30 "$OUT/build.log"
    timeout 240 $PY setup.py build_ext --inplace >>"$OUT/build.log" 2>&1 || fail "build (see $OUT/build.log)"
fi
grep -E "building the (CUDA|CPU) extension" "$OUT/build.log" | tail -1
$PY -c "
import medgrid.ops as o
info = o.build_info()
print('build_info:', info)
assert info is not None and info['has_cuda'], 'medgrid._C was not built with CUDA kernels'
assert o.fused_available('cuda'), 'no CUDA kernel registered for medgrid::pgd_step'
" || fail "extension check"
# what a job's log would say: versions, this GPU, the library's GPU code and which of it this GPU runs
$PY -m medgrid info --require-cuda || fail "medgrid info --require-cuda (no CUDA kernels, or none for this GPU)"

step "2. compute-sanitizer memcheck"
if command -v compute-sanitizer >/dev/null; then
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $PY -c "
import torch
import medgrid.ops
for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
    for shape in ((3, 3, 224, 224), (4, 3, 17, 13), (2, 1, 28, 28), (5,)):
        x = torch.rand(shape, device='cuda', dtype=dt)
        g = torch.randn(shape, device='cuda', dtype=dt)
        for norm in ('linf', 'l2'):
            torch.ops.medgrid.pgd_step(x, g, x, norm, 0.03, 0.01, False)
            off = [torch.cat([t.flatten(), t.flatten()[:1]])[1:].view(shape) for t in (x, g, x)]
            torch.ops.medgrid.pgd_step(*off, norm, 0.03, 0.01, True)   # unaligned: scalar path
torch.cuda.synchronize()
print('memcheck workload done')
" >"$OUT/memcheck.log" 2>&1 || fail "compute-sanitizer memcheck (see $OUT/memcheck.log)"
    tail -3 "$OUT/memcheck.log"
else
    echo "compute-sanitizer not found: skipped"
fi

step "3. pytest tests/test_ops.py"
# --noconftest: the op's tests need nothing from other modules' fixtures (and their imports)
timeout 180 $PY -m pytest tests/test_ops.py -q -rs --noconftest -p no:cacheprovider \
    || fail "pytest tests/test_ops.py"

step "4. benchmarks/pgd_step.py"
for dtype in float32 bfloat16; do
    timeout 100 $PY benchmarks/pgd_step.py --device cuda --dtype "$dtype" --runs 50 \
        --json "$OUT/pgd_step_cuda_${dtype}.json" || fail "benchmark cuda $dtype"
done
timeout 100 $PY benchmarks/pgd_step.py --device cpu --threads "$(nproc)" --runs 20 \
    --json "$OUT/pgd_step_cpu.json" || fail "benchmark cpu"

step "5. benchmarks/pgd_attack.py"
# Robust evaluation (skip/fused variants, torchattacks) and the step's share of one PGD iteration,
# eager vs fused. One more file under $OUT (the device tool returns 8 files in all).
timeout 170 $PY benchmarks/pgd_attack.py --device cuda --archs cnn-small resnet18 --n 1000 --repeats 3 \
    --threads "$(nproc)" --json "$OUT/pgd_attack_cuda.json" || fail "benchmark pgd_attack cuda"

step "6. one small cell end to end on ${E2E_DEVICE:-cuda} (benchmarks/gpu_cell.sh)"
# train and evaluate run through the CLI, so medgrid's other dependencies must be installed
if $PY -c "import pandas, pyarrow, sklearn, tqdm" 2>/dev/null; then
    PYTHON=$PY bash benchmarks/gpu_cell.sh || fail "one cell end to end (see the lines above)"
else
    echo "pandas, pyarrow, sklearn or tqdm missing: skipped"
fi

step "7. benchmarks/memory.py (224 px, --data-on host)"
# The streamed path (pinned host memory, non_blocking copies per batch) has not run on a GPU elsewhere;
# train and evaluate run through the CLI, so medgrid's other dependencies must be installed.
if $PY -c "import pandas, pyarrow, sklearn, tqdm" 2>/dev/null; then
    timeout 200 $PY benchmarks/memory.py --sizes 224 --mib 200 --device cuda --data-on host --threads "$(nproc)" \
        --json "$OUT/memory_cuda_host.json" || fail "benchmark memory cuda host"
else
    echo "pandas, pyarrow, sklearn or tqdm missing: skipped"
fi

step "done: status $status"
ls -la "$OUT"
exit $status
