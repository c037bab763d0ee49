#!/usr/bin/env bash
# One small cell end to end through the command line, the way the workflow runs it, on one device:
# synthetic data, a standard and an L-inf model, evaluation with the strong evaluation and the
# gradient-masking checks (the robust model also gets the transfer check from the standard one),
# the Ilyas D_rand and D_R datasets, a fresh model trained on D_rand and its evaluation.
# Step 6 of benchmarks/gpu.sh; on its own:
#   E2E_DEVICE=cpu E2E_TIMEOUT=1800 bash benchmarks/gpu_cell.sh     # the same cell on a CPU
# Prints each command's wall time and the rows that say whether the numbers can be trusted;
# exit status non-zero when any command failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${E2E_DEVICE:-cuda}
LIMIT=${E2E_TIMEOUT:-200}
status=0
fail() { echo "!!! FAILED: $*"; status=1; }
# torchattacks (Square, for the black-box check) may be missing where there is no registry: carry its
# wheel in .whl/ (pip download --no-deps torchattacks==3.5.1 -d .whl) or the checks run without --sanity.
$PY -c "import torchattacks" 2>/dev/null || $PY -m pip install -q --no-deps --no-index .whl/torchattacks-*.whl 2>/dev/null
SANITY=$($PY -c "import torchattacks" 2>/dev/null && echo "--sanity" || echo "")
[ -z "$SANITY" ] && echo "torchattacks missing: evaluating without --sanity"
E2E=$(mktemp -d)
trap 'rm -rf "$E2E"' EXIT
run() {  # run NAME medgrid-arguments...: one command with its wall time
    local name=$1 t0=$SECONDS; shift
    if timeout "$LIMIT" $PY -m medgrid "$@" --device "$DEVICE" --threads 4 >"$E2E/$name.log" 2>&1; then
        echo "ok   $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s, exit $?; last lines:)"; tail -15 "$E2E/$name.log"; fail "$name"
    fi
}
timeout 60 $PY -m medgrid prepare-data --task synthetic --size 28 --out "$E2E/d/synthetic.npz" >/dev/null || fail "prepare-data"
run train-std train --task synthetic --size 28 --arch cnn-small --norm none --data "$E2E/d/synthetic.npz" \
    --out "$E2E/std.pt" --epochs 8 --stop-train-acc 0.995
run train-linf train --task synthetic --size 28 --arch cnn-small --norm linf --eps 2/255 --data "$E2E/d/synthetic.npz" \
    --out "$E2E/rob.pt" --epochs 4 --attack-steps 5
for m in std rob; do
    run "evaluate-$m" evaluate --checkpoint "$E2E/$m.pt" --data "$E2E/d/synthetic.npz" --out "$E2E/$m.parquet" \
        --attack-norm linf --attack-eps 1/255,2/255,4/255 --attack-norm l2 --attack-eps 0.5 \
        --strong --strong-samples 500 $SANITY \
        $([ $m = rob ] && [ -n "$SANITY" ] && echo --transfer-from "$E2E/std.pt")
done
run features-rand features nonrobust --checkpoint "$E2E/std.pt" --data "$E2E/d/synthetic.npz" --mode rand --steps 10 \
    --out "$E2E/drand.npz" --table "$E2E/drand.parquet"
run features-robust features robust --checkpoint "$E2E/rob.pt" --data "$E2E/d/synthetic.npz" --steps 25 --step-size 0.15 \
    --out "$E2E/drobust.npz"
run train-drand train --task synthetic --size 28 --arch cnn-small --norm none --data "$E2E/drand.npz" --train-data drand --out "$E2E/drand.pt" --epochs 6
run evaluate-drand evaluate --checkpoint "$E2E/drand.pt" --data "$E2E/d/synthetic.npz" --attack-norm linf \
    --attack-eps 2/255 --out "$E2E/drand_eval.parquet"
# the rows that matter, from the tables just written
$PY - "$E2E" <<'PY' || fail "reading the tables"
import sys, pathlib, pandas as pd
d = pathlib.Path(sys.argv[1])
frames = [pd.read_parquet(p) for p in sorted(d.glob("*.parquet"))]
t = pd.concat(frames, ignore_index=True)
keep = t[t.metric.isin(["balanced_acc", "attack_success", "monotone", "unbounded", "pgd_vs_worst",
                        "black_box", "transfer"]) & t.eval_kind.isin(["clean", "pgd", "worst", "sanity", "features"])]
pd.set_option("display.width", 200)
print(keep[["train_norm", "train_data", "eval_kind", "eval_norm", "eval_eps", "metric", "value", "n"]]
      .to_string(index=False))
PY
echo "gpu_cell: status $status on $DEVICE"
exit $status
