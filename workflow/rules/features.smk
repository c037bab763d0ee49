# The datasets of Ilyas et al. (2019) and the models trained on them (see docs/features.md):
#   D_rand, D_det: targeted PGD on each standard model (none-0), relabelled to the target;
#   D_R: representation inversion on one robust cell (config features.robust.source).
# results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}.npz       the dataset
#                                                   .../features/{fset}.parquet   how it was made (tidy rows)
#                                                   .../features/{fset}/model.pt  standard training on it
#                                                   .../features/{fset}/metrics/eval.parquet
# (D_rand and D_det sit under none-0, D_R under its robust cell.) Every model is evaluated on the
# ORIGINAL clean test set and under PGD; its rows carry train_data = drand | ddet | drobust.


# D_rand / D_det from the standard model of a cell.
rule features_nonrobust:
    input:
        model=lambda wildcards: rules.train.output.model.format(
            norm="none", eps="0", **dict(wildcards.items())
        ),
        data=data_npz,
    output:
        npz="results/{task}/{size}/{arch}/none-0/seed{seed}/features/{nonrobust}.npz",
        table="results/{task}/{size}/{arch}/none-0/seed{seed}/features/{nonrobust}.parquet",
    log:
        "logs/{task}/{size}/{arch}/none-0/seed{seed}/features-{nonrobust}.log",
    benchmark:
        "logs/{task}/{size}/{arch}/none-0/seed{seed}/features-{nonrobust}.benchmark.tsv"
    wildcard_constraints:
        nonrobust="drand|ddet",
    conda:
        medgrid_env("features_nonrobust", "features")
    threads: threads_for("features")
    resources:
        mem_mb=mem_mb("features", names.SPLITS + ("train",)),
        runtime=resource("features", "runtime"),
        gpu=resource("features", "gpu"),
    params:
        options=nonrobust_options,
        data_on=config["data_on"],
    shell:
        "medgrid features nonrobust --checkpoint {input.model} --data {input.data}"
        " --out {output.npz} --table {output.table} {params.options} --data-on {params.data_on}"
        " --threads {threads} > {log} 2>&1"


# D_R from an adversarially trained cell (only features.robust.source is requested).
rule features_robust:
    input:
        model=rules.train.output.model,
        data=data_npz,
    output:
        npz="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/drobust.npz",
        table="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/drobust.parquet",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-drobust.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-drobust.benchmark.tsv"
    conda:
        medgrid_env("features_robust", "features")
    threads: threads_for("features")
    resources:
        mem_mb=mem_mb("features", names.SPLITS + ("train",)),
        runtime=resource("features", "runtime"),
        gpu=resource("features", "gpu"),
    params:
        options=robust_options(),
        data_on=config["data_on"],
    shell:
        "medgrid features robust --checkpoint {input.model} --data {input.data}"
        " --out {output.npz} --table {output.table} {params.options} --data-on {params.data_on}"
        " --threads {threads} > {log} 2>&1"


# Standard training on a constructed dataset (its val/test splits are the original task's).
rule train_features:
    input:
        features="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}.npz",
        data=data_npz,
    output:
        model="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}/model.pt",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-train.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-train.benchmark.tsv"
    wildcard_constraints:
        fset="drand|ddet|drobust",
    conda:
        medgrid_env("train_features", "train")
    threads: threads_for("train")
    resources:
        mem_mb=mem_mb("train", ("train", "val")),
        runtime=resource("train", "runtime"),
        gpu=resource("train", "gpu"),
    params:
        hparams=features_train_options,
        data_on=config["data_on"],
    shell:
        "medgrid train --task {wildcards.task} --size {wildcards.size} --arch {wildcards.arch}"
        " --norm none --eps 0 --seed {wildcards.seed}"
        " --data {input.features} --train-data {wildcards.fset} --out {output.model}"
        " {params.hparams} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


# Clean and PGD metrics on the ORIGINAL task's test split (--data is the task's own file).
rule evaluate_features:
    input:
        unpack(transfer_source),
        model=rules.train_features.output.model,
        data=data_npz,
    output:
        table="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}/metrics/eval.parquet",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-evaluate.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-evaluate.benchmark.tsv"
    wildcard_constraints:
        fset="drand|ddet|drobust",
    conda:
        medgrid_env("evaluate_features", "evaluate")
    threads: threads_for("evaluate")
    resources:
        mem_mb=mem_mb("evaluate", ("test",)),
        runtime=resource("evaluate", "runtime"),
        gpu=resource("evaluate", "gpu"),
    params:
        attacks=features_attack_options(),
        options=evaluate_options(features_attack_grid()),
        transfer=transfer_option,
        data_on=config["data_on"],
    shell:
        "medgrid evaluate --checkpoint {input.model} --data {input.data}"
        " --out {output.table} {params.attacks} {params.options}"
        " {params.transfer} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


RESULT_TABLES.extend(features_tables())
