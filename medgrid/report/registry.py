"""Every chart and page of the report, in one registry: its file name, title, the rows it needs, its report label
and caption. ``medgrid charts`` (medgrid.report.render) writes what this lists, and workflow/rules/report.smk
expands the charts rule's outputs from it, so a new chart is one entry here and one builder.

Plain Python: the workflow imports it without pandas or altair.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("html", "png", "svg")  # every chart is written in each
TABLE = "table.html"  # the seed-aggregated table
AUDIT = "audit.html"  # the evaluation audit


@dataclass(frozen=True)
class Chart:
    name: str  # file stem: {name}.html, .png, .svg
    title: str
    needs: str  # the rows it is drawn from, said by its placeholder until they exist
    label: str  # its entry in the Snakemake report
    source: str = "summary"  # summary: drawn from summary.parquet; history: from history.parquet (and summary)

    @property
    def caption(self) -> str:
        """The report caption (workflow/report/{name}.rst), relative to workflow/rules/."""
        return f"../report/{self.name}.rst"


CHARTS: tuple[Chart, ...] = (
    Chart("tradeoff", "Clean vs corrupted accuracy trade-off",
          "clean rows and MedMNIST-C rows (eval_kind=corruption, corruption=mean, severity=0) of models trained on "
          "the original data", "(a) trade-off: clean vs MedMNIST-C"),
    Chart("robust_vs_eps", "Robust accuracy vs attack ε",
          "PGD or worst-case rows (eval_kind=pgd, worst) of models trained on the original data",
          "(b) robust accuracy vs attack epsilon"),
    Chart("by_train_eps", "Clean, robust and MedMNIST-C accuracy vs training ε",
          "clean rows of standard and adversarially trained models (train_norm linf or l2)",
          "(c) accuracy vs training epsilon"),
    Chart("nonrobust_features", "Non-robust features: models trained on D_rand / D_det / D_R",
          "clean rows of models trained on D_rand, D_det or D_R (train_data drand, ddet, drobust)",
          "(d) non-robust features"),
    Chart("corruption_heatmap", "Robust minus standard accuracy per corruption and severity",
          "per-corruption MedMNIST-C rows (eval_kind=corruption, severity >= 1) of a standard and an adversarially "
          "trained model", "(e) corruption x severity, robust - standard"),
    Chart("training_curves", "Training curves: loss, accuracy and validation balanced accuracy per epoch",
          "the per-epoch histories of the checkpoints (medgrid history -> results/history.parquet)",
          "(f) training curves", source="history"),
    Chart("nonrobust_sweep", "Non-robust features vs the attack: D_rand / D_det per attack setting",
          "clean rows of models trained on D_rand / D_det of recorded attack settings (column construction); "
          "texture rows (metric texture_alignment) on the synthetic tasks", "(g) non-robust features vs attack"),
)
BY_NAME = {chart.name: chart for chart in CHARTS}


def files(chart: Chart) -> dict[str, str]:
    """{output key: file name} of one chart: ``{name}_{fmt}`` -> ``{name}.{fmt}``."""
    return {f"{chart.name}_{fmt}": f"{chart.name}.{fmt}" for fmt in FORMATS}
