"""The evaluation audit: one row per evaluated model with the outcome of each gradient-masking check
(:mod:`medgrid.evaluation.sanity`), what it was decided on (for the per-sample checks: how many samples only
Square, or only the transferred examples, broke), and the gap between PGD and the worst case, as a frame and as
an HTML page for the report on which a failed check stands out."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from medgrid import results
from medgrid.atomic import atomic_output
from medgrid.labels import DATA_LABEL, setting_label, setting_order
from medgrid.names import SANITY_CHECKS as CHECKS

CELL = results.CELL
CHECK_TITLES = {
    "monotone": "accuracy falls with ε",
    "unbounded": "unbounded attack → 0",
    "pgd_vs_worst": "PGD ≈ worst case",
    "black_box": "only Square breaks ≤ tol.",
    "transfer": "only transfer breaks ≤ tol.",
}
# the measured quantity of each check, as medgrid.evaluation.sanity writes it; older tables decided
# black_box / transfer on totals (black_box_gap, transfer_gap: worst-case accuracy minus the attack's)
MEASURED = {"monotone": ("monotone_max_increase",), "unbounded": ("unbounded_acc",),
            "pgd_vs_worst": ("pgd_minus_worst",), "black_box": ("black_box_only", "black_box_gap"),
            "transfer": ("transfer_only", "transfer_gap")}


def _measured(group: pd.DataFrame, check: str) -> str:
    """What the check was decided on, at its worst row: 'k/n samples' for the per-sample checks, points else."""
    for metric in MEASURED[check]:
        rows = group[group.metric == metric]
        if rows.empty:
            continue
        worst = rows.loc[rows.value.idxmax()]
        if metric.endswith("_only"):
            return f"{round(worst.value * worst.n)}/{int(worst.n)} samples"
        if metric == "unbounded_acc":
            return f"acc {100 * worst.value:.1f}%"
        return f"{100 * worst.value:+.1f} pts"
    return ""


def audit_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated model: each check ``pass`` / ``FAIL`` / ``n/a`` (a check with several rows, one per norm
    or epsilon, fails if any fails) with what it was decided on at its worst row (``<check>_measured``), the
    largest PGD - worst-case accuracy gap (points) and the number of checks failed. Empty when the table has
    no sanity rows."""
    rows = df[df.eval_kind == "sanity"]
    if rows.empty:
        return pd.DataFrame(columns=CELL + list(CHECKS) + [f"{c}_measured" for c in CHECKS]
                            + ["pgd_minus_worst_pp", "failed"])
    out = []
    for key, group in rows.groupby(CELL, sort=False):
        entry = dict(zip(CELL, key))
        for check in CHECKS:
            values = group[group.metric == check].value
            entry[check] = "n/a" if values.empty else ("pass" if (values == 1.0).all() else "FAIL")
            entry[f"{check}_measured"] = _measured(group, check)
        gaps = group[group.metric == "pgd_minus_worst"].value
        entry["pgd_minus_worst_pp"] = 100.0 * gaps.max() if not gaps.empty else float("nan")
        entry["failed"] = sum(entry[c] == "FAIL" for c in CHECKS)
        out.append(entry)
    frame = pd.DataFrame(out)
    setting = [setting_order(*k) for k in zip(frame.train_norm, frame.train_eps, frame.train_method,
                                                frame.train_method_param)]
    order = frame.assign(_s=setting, _d=frame.train_data.map(list(DATA_LABEL).index))
    return frame.loc[order.sort_values(["task", "size", "arch", "_d", "_s", "seed"]).index].reset_index(drop=True)


def write_audit_html(df: pd.DataFrame, path, source: str = "the tidy table") -> Path:
    """The audit as one page: a summary line, then the table with failed checks in red."""
    frame = audit_frame(df)
    n, bad = len(frame), int((frame.failed > 0).sum()) if len(frame) else 0
    if n == 0:
        summary = "No gradient-masking checks in this table (evaluate with --strong --sanity)."
    elif bad == 0:
        summary = f"All {n} evaluated models pass every check."
    else:
        summary = f"<strong class='fail'>{bad} of {n} evaluated models fail a check</strong>; their rows come first."
        frame = pd.concat([frame[frame.failed > 0], frame[frame.failed == 0]], ignore_index=True)
    body = []
    for r in frame.itertuples():
        training = setting_label(r.train_norm, r.train_eps, r.train_method, r.train_method_param)
        cells = [html.escape(str(v)) for v in (r.task, r.size, r.arch, training,
                                                 DATA_LABEL.get(r.train_data, r.train_data), r.seed)]
        checks = [f"<td class='{getattr(r, c).replace('/', '')}'>{getattr(r, c)}"
                  f"<br><small>{html.escape(getattr(r, f'{c}_measured'))}</small></td>" for c in CHECKS]
        gap = "–" if pd.isna(r.pgd_minus_worst_pp) else f"{r.pgd_minus_worst_pp:+.1f}"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "".join(checks) + f"<td>{gap}</td></tr>")
    head = ["task", "size", "arch", "training", "data", "seed"] + [CHECK_TITLES[c] for c in CHECKS] + \
        ["PGD − worst (points)"]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>medgrid: evaluation audit</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th {{ background: #f0f0f0; text-align: left; padding: 4px 8px; }}
td {{ padding: 3px 8px; border-bottom: 1px solid #e4e4e4; font-variant-numeric: tabular-nums; }}
td.pass {{ color: #1a7f37; }}
td.FAIL, .fail {{ background: #ffd7d5; color: #a40e26; font-weight: bold; }}
td.na {{ color: #888; }}
</style></head><body>
<h2>Evaluation audit: gradient-masking checks</h2>
<p>{summary}</p>
<p>Per evaluated model (Carlini et al. 2019): robust accuracy falls as ε grows (PGD at each ε on its own);
an unbounded attack (L∞ ε 0.5) drives accuracy to about 0; the worst case over every attack run is within
the tolerance of PGD alone (else PGD, the attack behind every other number, overstates robustness); the
share of samples that the black-box Square attack, or examples transferred from the standard model, break
while no white-box attack does is within the tolerance, decided sample by sample (below each outcome: the
count at its worst norm and ε). n/a: not run (the standard model has no transfer source).
Source: {html.escape(str(source))}.</p>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(path)
