# One tidy table from every cell's tables: results/summary.{parquet,csv} and the seed-aggregated
# view results/summary_by_seed.parquet (mean, std, 95% interval over seeds).
rule aggregate:
    input:
        tables=result_tables,
    output:
        summary="results/summary.parquet",
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "all measurements"},
        ),
        by_seed="results/summary_by_seed.parquet",
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/aggregate.benchmark.tsv"
    conda:
        "../../envs/report.yaml"
    threads: threads_for("aggregate")
    resources:
        mem_mb=resource("aggregate", "mem_mb"),
        runtime=resource("aggregate", "runtime"),
        gpu=resource("aggregate", "gpu"),
    shell:
        "medgrid aggregate --out {output.summary} {input.tables} > {log} 2>&1"


FINAL_TARGETS.extend(rules.aggregate.output)


# The headline table (docs/results.md): per task, size and arch, one row per training setting with
# clean, robust (at the headline epsilons), MedMNIST-C, BE / rBE and D_rand / D_det / D_R accuracy,
# mean and 95% interval over seeds; as HTML (the report's first category), tidy CSV and LaTeX.
rule table:
    input:
        summary=rules.aggregate.output.summary,
    output:
        html=report(
            "results/tables/headline.html",
            caption="../report/headline.rst",
            category="At a glance",
            labels={"table": "headline: one row per training setting"},
        ),
        csv=report(
            "results/tables/headline.csv",
            caption="../report/headline_files.rst",
            category="Tables",
            labels={"table": "headline (tidy CSV)"},
        ),
        tex=report(
            "results/tables/headline.tex",
            caption="../report/headline_files.rst",
            category="Tables",
            labels={"table": "headline (LaTeX, booktabs)"},
        ),
    log:
        "logs/table.log",
    benchmark:
        "logs/table.benchmark.tsv"
    conda:
        "../../envs/report.yaml"
    threads: threads_for("table")
    resources:
        mem_mb=resource("table", "mem_mb"),
        runtime=resource("table", "runtime"),
        gpu=resource("table", "gpu"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.html),
        options=headline_options(),
    shell:
        "medgrid table --summary {input.summary} --out-dir {params.out_dir} {params.options} > {log} 2>&1"


FINAL_TARGETS.extend(rules.table.output)


# The per-epoch training records of every model (train loss, train accuracy, validation balanced
# accuracy, the selected epoch) as one table, read from the checkpoints' settings, for the training curves.
rule history:
    input:
        checkpoints=all_checkpoints,
    output:
        table="results/history.parquet",
    log:
        "logs/history.log",
    benchmark:
        "logs/history.benchmark.tsv"
    conda:
        "../../envs/report.yaml"
    threads: threads_for("history")
    resources:
        mem_mb=resource("history", "mem_mb"),
        runtime=resource("history", "runtime"),
        gpu=resource("history", "gpu"),
    shell:
        "medgrid history --out {output.table} {input.checkpoints} > {log} 2>&1"


# Every chart of medgrid's chart registry (medgrid.report.registry), each as interactive HTML (Vega inlined,
# works offline), PNG and SVG, plus the seed-aggregated table and the evaluation audit as HTML. A chart whose rows do not exist yet (MedMNIST-C,
# D_rand/D_det/D_R) is written as a "no rows yet" placeholder, so these outputs never change and
# the charts fill in when the summary gains their rows. Also the training curves of every model.
rule charts:
    input:
        summary=rules.aggregate.output.summary,
        history=rules.history.output.table,
    output:
        **chart_outputs(),
    log:
        "logs/charts.log",
    benchmark:
        "logs/charts.benchmark.tsv"
    conda:
        "../../envs/report.yaml"
    threads: threads_for("charts")
    resources:
        mem_mb=resource("charts", "mem_mb"),
        runtime=resource("charts", "runtime"),
        gpu=resource("charts", "gpu"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        metric="balanced_acc",
    shell:
        "medgrid charts --summary {input.summary} --history {input.history} --out-dir {params.out_dir} --metric {params.metric} > {log} 2>&1"


FINAL_TARGETS.extend(rules.charts.output)


# The input-gradient figure of one task (the paper's Fig. 1) on a few test images, clean and under
# PGD (the first robust model's norm and epsilon): the standard model and, per training norm, the
# most robust one (largest epsilon), at the first size, arch and seed of the grid.
rule saliency:
    input:
        checkpoints=lambda wildcards: [
            rules.train.output.model.format(
                task=wildcards.task,
                method="",
                size=config["sizes"][0],
                arch=config["archs"][0],
                norm=norm,
                eps=tokens[-1],
                seed=config["seeds"][0],
            )
            for norm, tokens in TRAIN_GRID.items()
        ],
        data=lambda wildcards: data_file(wildcards.task, config["sizes"][0]),
    output:
        figure=report(
            "results/charts/saliency-{task}.png",
            caption="../report/saliency.rst",
            category="Saliency maps",
            subcategory="{task}",
            labels={"task": "{task}", "figure": "input gradients"},
        ),
    log:
        "logs/saliency-{task}.log",
    benchmark:
        "logs/saliency-{task}.benchmark.tsv"
    conda:
        "../../envs/report.yaml"
    threads: threads_for("saliency")
    resources:
        mem_mb=mem_mb("saliency", ("test",), size=config["sizes"][0]),
        runtime=resource("saliency", "runtime"),
        gpu=resource("saliency", "gpu"),
    params:
        n=4,
    shell:
        "medgrid saliency --checkpoint {input.checkpoints} --data {input.data} --out {output.figure} --n {params.n} --threads {threads} > {log} 2>&1"


FINAL_TARGETS.extend(expand(rules.saliency.output.figure, task=config["tasks"]))
