# Train one cell: standard training (none-0) or adversarial training at the cell's norm and eps, by
# PGD-AT ({method} empty) or the method of its folder ({method} trades-beta6/, fgsm-rs/). Hyperparameters
# and the method's flags come from config hparams.<arch> and train_grid through params, so editing them
# reruns exactly the cells they apply to.
rule train:
    input:
        data=data_npz,
    output:
        model="results/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/model.pt",
    log:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/train.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/train.benchmark.tsv"
    conda:
        medgrid_env("train")
    threads: threads_for("train")
    resources:
        mem_mb=mem_mb("train", ("train", "val")),
        runtime=resource("train", "runtime"),
        gpu=resource("train", "gpu"),
    params:
        eps=lambda wildcards: epsilon.arg(wildcards.norm, wildcards.eps),
        hparams=train_options,
        data_on=config["data_on"],
    shell:
        "medgrid train --task {wildcards.task} --size {wildcards.size} --arch {wildcards.arch}"
        " --norm {wildcards.norm} --eps {params.eps} --seed {wildcards.seed}"
        " --data {input.data} --out {output.model}"
        " {params.hparams} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


# The checkpoints are products of the workflow too: a deleted one is trained again.
FINAL_TARGETS.extend(grid_paths(rules.train.output.model))
