# MedMNIST-C (docs/shift.md): one job per task x size x corruption writes that corrupted test set,
#   resources/medmnist-c/{size}/{task}/{corruption}.npz   (MedMNIST-C's layout, at the model size)
# downloaded (official files) or generated with medmnistc; then every model of the grid is evaluated on
# all corruptions of its task:
#   results/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/metrics/shift.parquet   (eval_kind corruption)
# Settings and input functions: common.smk ("corrupted test sets").

# The test sets of each task: medgrid.catalog.shift_sets (medmnistc 0.1.0's registry for MedMNIST, medgrid's
# suite and texture_shuffled for the synthetic tasks, then every task's resample_control).
SHIFT_SETS = {task: catalog.shift_sets(task) for task in config["tasks"]}


# MedMNIST-C's zip of a task (source download), fetched once for all its sets.
rule shift_fetch:
    output:
        archive=shift_archive("{task}"),
    log:
        "logs/shift/fetch/{task}.log",
    benchmark:
        "logs/shift/fetch/{task}.benchmark.tsv"
    conda:
        "../../envs/medgrid.yaml"
    threads: 1
    resources:
        mem_mb=resource("default", "mem_mb"),
        runtime=resource("default", "runtime"),
        gpu=0,
    shell:
        "medgrid shift fetch --task {wildcards.task} --out {output.archive} > {log} 2>&1"


# The 224-px test set that `shift_prepare` corrupts when 224 is not a size of the grid.
rule shift_source_224:
    input:
        unpack(shift_source_224_input),
    output:
        npz=f"{SHIFT_ROOT}/source/{{task}}_224.npz",
    log:
        "logs/shift/source/{task}_224.log",
    benchmark:
        "logs/shift/source/{task}_224.benchmark.tsv"
    conda:
        medgrid_env("shift_source_224", "prepare_data")
    threads: threads_for("prepare_data")
    resources:
        mem_mb=mem_mb("prepare_data", prepared_splits, size=224),
        runtime=resource("prepare_data", "runtime"),
        gpu=resource("prepare_data", "gpu"),
    params:
        options=lambda wildcards, input: (
            f"--source {input.source}" if "source" in input.keys() else ""
        ),
    shell:
        "medgrid prepare-data --task {wildcards.task} --size 224 --out {output.npz} {params.options} > {log} 2>&1"


# One corrupted test set (five severities; texture_shuffled: one level).
rule shift_prepare:
    input:
        unpack(shift_inputs),
    output:
        npz=f"{SHIFT_ROOT}/{{size}}/{{task}}/{{corruption}}.npz",
    log:
        "logs/shift/{size}/{task}/{corruption}.log",
    benchmark:
        "logs/shift/{size}/{task}/{corruption}.benchmark.tsv"
    wildcard_constraints:
        corruption=_alternatives(n for sets in SHIFT_SETS.values() for n in sets),
    conda:
        "../../envs/medmnistc.yaml"
    threads: threads_for("shift_prepare")
    resources:
        mem_mb=shift_prepare_mem_mb,
        runtime=resource("shift_prepare", "runtime"),
        gpu=resource("shift_prepare", "gpu"),
    params:
        options=shift_prepare_options,
    shell:
        "medgrid shift prepare --task {wildcards.task} --size {wildcards.size} --data {input.data} --corruption {wildcards.corruption} --out {output.npz} {params.options} --threads {threads} > {log} 2>&1"


# Every corruption of the task, for one model: a table of its own (no clean rows; those are in eval.parquet).
rule shift_evaluate:
    input:
        model=rules.train.output.model,
        data=data_npz,
        sets=shift_set_files,
    output:
        table="results/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/metrics/shift.parquet",
    log:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/shift.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/shift.benchmark.tsv"
    conda:
        "../../envs/medmnistc.yaml"
    threads: threads_for("shift_evaluate")
    resources:
        mem_mb=mem_mb("shift_evaluate", ("test",) * 6),
        runtime=resource("shift_evaluate", "runtime"),
        gpu=resource("shift_evaluate", "gpu"),
    params:
        data_on=config["data_on"],
    shell:
        "medgrid evaluate --checkpoint {input.model} --data {input.data} --shift-sets {input.sets} --no-clean --out {output.table} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


if SHIFT["enabled"]:
    RESULT_TABLES.extend(grid_paths(rules.shift_evaluate.output.table))
