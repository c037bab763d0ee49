# Clean and PGD metrics of one cell's model on its task's test split, as a tidy table.
rule evaluate:
    input:
        unpack(transfer_source),
        model=rules.train.output.model,
        data=data_npz,
    output:
        table="results/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/metrics/eval.parquet",
    log:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/evaluate.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/evaluate.benchmark.tsv"
    conda:
        medgrid_env("evaluate")
    threads: threads_for("evaluate")
    resources:
        mem_mb=mem_mb("evaluate", ("test",)),
        runtime=resource("evaluate", "runtime"),
        gpu=resource("evaluate", "gpu"),
    params:
        attacks=attack_options(),
        options=evaluate_options(),
        transfer=transfer_option,
        data_on=config["data_on"],
    shell:
        "medgrid evaluate --checkpoint {input.model} --data {input.data}"
        " --out {output.table} {params.attacks} {params.options}"
        " {params.transfer} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


RESULT_TABLES.extend(grid_paths(rules.evaluate.output.table))
