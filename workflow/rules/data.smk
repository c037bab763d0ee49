# Prepare one task at one size in MedMNIST's npz layout under resources/data/: generate a synthetic
# task, copy an already-downloaded MedMNIST file (config source_dir; the folder is only read), or
# download it with the medmnist package.
rule prepare_data:
    input:
        unpack(source_npz),
    output:
        npz="resources/data/{dataset}.npz",
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "logs/data/{dataset}.benchmark.tsv"
    conda:
        medgrid_env("prepare_data")
    threads: threads_for("prepare_data")
    resources:
        mem_mb=mem_mb("prepare_data", prepared_splits),
        runtime=resource("prepare_data", "runtime"),
        gpu=resource("prepare_data", "gpu"),
    params:
        task=lookup(dpath="{dataset}/task", within=DATASETS),
        size=lookup(dpath="{dataset}/size", within=DATASETS),
        options=prepare_options,
    shell:
        "medgrid prepare-data --task {params.task} --size {params.size}"
        " --out {output.npz} {params.options} > {log} 2>&1"
