"""``medgrid charts``: the Altair charts (HTML, PNG, SVG) and the HTML table of a summary."""

from __future__ import annotations

from pathlib import Path

from medgrid.names import CHART_METRICS


def add_arguments(p) -> None:
    p.add_argument("--summary", type=Path, required=True, help="tidy summary table (results/summary.parquet)")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for {chart}.{html,png,svg} and table.html")
    p.add_argument("--metric", choices=CHART_METRICS, default="balanced_acc", help="metric shown in the charts")
    p.add_argument("--history", type=Path, default=None,
                   help="per-epoch history table (results/history.parquet, from `medgrid history`): "
                        "also write the training_curves chart")


def run(args) -> None:
    from medgrid.cli.base import check_writable
    from medgrid.errors import UserError
    from medgrid.report import registry

    try:
        from medgrid.report import render
    except ModuleNotFoundError as exc:  # altair and vl-convert come with the report extra
        raise UserError(f"the charts need {exc.name}: pip install 'medgrid[report]' (or use envs/report.yaml)") from None

    files = [name for chart in registry.CHARTS for name in registry.files(chart).values()]
    check_writable(*(args.out_dir / name for name in files + [registry.TABLE, registry.AUDIT]))
    render.make_charts(args.summary, args.out_dir, metric=args.metric, history=args.history)
