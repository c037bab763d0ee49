# The datasets of Ilyas et al. (2019) and the models trained on them (see docs/features.md):
#   D_rand, D_det: targeted PGD on each standard model (none-0), relabelled to the target, one pair per
#   setting of features.nonrobust (an attack sweep names them drand-l2-0.5-100x0.1, ...);
#   D_R: representation inversion on one robust cell (config features.robust.source).
# results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}.npz       the dataset
#                                                   .../features/{fset}.parquet   how it was made (tidy rows)
#                                                   .../features/{fset}.alignment.parquet  texture alignment
#                                                                                 (D_rand / D_det, synthetic tasks)
#                                                   .../features/{fset}/model.pt  standard training on it
#                                                   .../features/{fset}/metrics/eval.parquet
#                                                   .../features/{fset}/model{k}/...  models k = 1.. (model_seeds)
# (D_rand and D_det sit under none-0, D_R under its robust PGD-AT cell.) Every model is evaluated on the
# ORIGINAL clean test set and under PGD; its rows carry train_data = drand | ddet | drobust, the attack
# setting (construction) and the model's number (model_seed).


# D_rand / D_det from the standard model of a cell.
rule features_nonrobust:
    input:
        model=lambda wildcards: rules.train.output.model.format(
            method="", norm="none", eps="0", **dict(wildcards.items())
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
        nonrobust=_alternatives(NONROBUST_SETS),
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


# D_R from an adversarially trained cell (only features.robust.source is requested; a PGD-AT cell).
rule features_robust:
    input:
        model=lambda wildcards: rules.train.output.model.format(
            method="", **dict(wildcards.items())
        ),
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
        fset=_alternatives(FEATURE_SETS),
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


# Clean metrics on the ORIGINAL task's test split (--data is the task's own file); for the D_R models also
# PGD and the strong evaluation (features.attack_grid): D_R's claim is robustness.
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
        fset=_alternatives(FEATURE_SETS),
    conda:
        medgrid_env("evaluate_features", "evaluate")
    threads: threads_for("evaluate")
    resources:
        mem_mb=mem_mb("evaluate", ("test",)),
        runtime=resource("evaluate", "runtime"),
        gpu=resource("evaluate", "gpu"),
    params:
        attacks=features_attack_options,
        options=features_evaluate_options,
        transfer=transfer_option,
        data_on=config["data_on"],
    shell:
        "medgrid evaluate --checkpoint {input.model} --data {input.data}"
        " --out {output.table} {params.attacks} {params.options}"
        " {params.transfer} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


# The second and later models trained on a dataset: the same command with --model-seed (in params.hparams).
use rule train_features as train_features_model with:
    output:
        model="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}/model{model}/model.pt",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-model{model}-train.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-model{model}-train.benchmark.tsv"


use rule evaluate_features as evaluate_features_model with:
    input:
        unpack(transfer_source),
        model=rules.train_features_model.output.model,
        data=data_npz,
    output:
        table="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features/{fset}/model{model}/metrics/eval.parquet",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-model{model}-evaluate.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/features-{fset}-model{model}-evaluate.benchmark.tsv"


# Synthetic tasks: how much of each D_rand / D_det perturbation lies along the planted textures.
rule features_alignment:
    input:
        npz=rules.features_nonrobust.output.npz,
        model=rules.features_nonrobust.input.model,
        data=data_npz,
    output:
        table="results/{task}/{size}/{arch}/none-0/seed{seed}/features/{nonrobust}.alignment.parquet",
    log:
        "logs/{task}/{size}/{arch}/none-0/seed{seed}/features-{nonrobust}-alignment.log",
    benchmark:
        "logs/{task}/{size}/{arch}/none-0/seed{seed}/features-{nonrobust}-alignment.benchmark.tsv"
    wildcard_constraints:
        nonrobust=_alternatives(NONROBUST_SETS),
        task=_alternatives(t for t in config["tasks"] if t in names.SYNTHETIC_TASKS)
        or "$^",
    conda:
        "../../envs/medgrid.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("default", names.SPLITS + ("train",)),
        runtime=resource("default", "runtime"),
        gpu=0,
    params:
        options=alignment_options,
    shell:
        "medgrid features alignment --features {input.npz} --name {wildcards.nonrobust}"
        " --checkpoint {input.model} --data {input.data} {params.options}"
        " --out {output.table} > {log} 2>&1"


RESULT_TABLES.extend(features_tables())
