# MedMNIST-C (docs/shift.md): one job per task x size x corruption writes that corrupted test set,
#   resources/medmnist-c/{size}/{task}/{corruption}.npz   (MedMNIST-C's layout, at the model size)
# downloaded (official files) or generated with medmnistc; then every model of the grid is evaluated on
# all corruptions of its task:
#   results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/metrics/shift.parquet   (eval_kind corruption)
# Settings and input functions: common.smk ("corrupted test sets").

# The test sets of each task: medmnistc 0.1.0's registry (CORRUPTIONS_DS) for MedMNIST, medgrid's
# suite (medgrid.corruptions.SYNTHETIC_SUITE and texture_shuffled) for the synthetic tasks, then every
# task's resample_control (the clean test set through the same resize path, uncorrupted). Listed here
# because Snakemake itself cannot import medmnistc; tests/test_shift.py checks it against medgrid.
SHIFT_CORRUPTIONS = {
    "pathmnist": [
        "pixelate",
        "jpeg_compression",
        "defocus_blur",
        "motion_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "saturate",
        "stain_deposit",
        "bubble",
        "resample_control",
    ],
    "dermamnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "impulse_noise",
        "shot_noise",
        "defocus_blur",
        "motion_blur",
        "zoom_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "black_corner",
        "characters",
        "resample_control",
    ],
    "octmnist": [
        "pixelate",
        "jpeg_compression",
        "speckle_noise",
        "defocus_blur",
        "motion_blur",
        "contrast_down",
        "resample_control",
    ],
    "pneumoniamnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "impulse_noise",
        "shot_noise",
        "gaussian_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "gamma_corr_up",
        "gamma_corr_down",
        "resample_control",
    ],
    "retinamnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "defocus_blur",
        "motion_blur",
        "brightness_down",
        "contrast_down",
        "resample_control",
    ],
    "breastmnist": [
        "pixelate",
        "jpeg_compression",
        "speckle_noise",
        "motion_blur",
        "brightness_up",
        "brightness_down",
        "contrast_down",
        "resample_control",
    ],
    "bloodmnist": [
        "pixelate",
        "jpeg_compression",
        "defocus_blur",
        "motion_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "saturate",
        "stain_deposit",
        "bubble",
        "resample_control",
    ],
    "tissuemnist": [
        "pixelate",
        "jpeg_compression",
        "impulse_noise",
        "gaussian_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "resample_control",
    ],
    "organamnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "impulse_noise",
        "shot_noise",
        "gaussian_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "gamma_corr_up",
        "gamma_corr_down",
        "resample_control",
    ],
    "organcmnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "impulse_noise",
        "shot_noise",
        "gaussian_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "gamma_corr_up",
        "gamma_corr_down",
        "resample_control",
    ],
    "organsmnist": [
        "pixelate",
        "jpeg_compression",
        "gaussian_noise",
        "speckle_noise",
        "impulse_noise",
        "shot_noise",
        "gaussian_blur",
        "brightness_up",
        "brightness_down",
        "contrast_up",
        "contrast_down",
        "gamma_corr_up",
        "gamma_corr_down",
        "resample_control",
    ],
    "synthetic": [
        "defocus_blur",
        "gaussian_blur",
        "pixelate",
        "brightness_down",
        "contrast_down",
        "texture_shuffled",
        "resample_control",
    ],
    "synthetic-rgb": [
        "defocus_blur",
        "gaussian_blur",
        "pixelate",
        "brightness_down",
        "contrast_down",
        "texture_shuffled",
        "resample_control",
    ],
}


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
        "../../envs/medgrid.yaml"
    threads: threads_for("prepare_data")
    resources:
        mem_mb=mem_mb("prepare_data", prepared_splits, size=224),
        runtime=resource("prepare_data", "runtime"),
        gpu=resource("prepare_data", "gpu"),
    params:
        options=lambda wildcards, input: (
            f"--source-dir {config['data_dir']}" if "source" in input.keys() else ""
        ),
    shell:
        "medgrid prepare-data --task {wildcards.task} --size 224 --data-dir $(dirname {output.npz}) {params.options} > {log} 2>&1"


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
        corruption=_alternatives(
            n for names in SHIFT_CORRUPTIONS.values() for n in names
        ),
    conda:
        "../../envs/medmnistc.yaml"
    threads: threads_for("shift_prepare")
    resources:
        mem_mb=shift_prepare_mem_mb,
        runtime=resource("shift_prepare", "runtime"),
        gpu=resource("shift_prepare", "gpu"),
    params:
        root=lambda wildcards: f"{SHIFT_ROOT}/{wildcards.size}",
        options=shift_prepare_options,
    shell:
        "medgrid shift prepare --task {wildcards.task} --size {wildcards.size} --data-dir $(dirname {input.data}) --out-dir {params.root} --corruption {wildcards.corruption} {params.options} --threads {threads} > {log} 2>&1"


# Every corruption of the task, for one model: a table of its own (no clean rows; those are in eval.parquet).
rule shift_evaluate:
    input:
        model=rules.train.output.model,
        data=data_npz,
        sets=shift_sets,
    output:
        table="results/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/metrics/shift.parquet",
    log:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/shift.log",
    benchmark:
        "logs/{task}/{size}/{arch}/{norm}-{eps}/seed{seed}/shift.benchmark.tsv"
    conda:
        "../../envs/medmnistc.yaml"
    threads: threads_for("shift_evaluate")
    resources:
        mem_mb=mem_mb("shift_evaluate", ("test",) * 6),
        runtime=resource("shift_evaluate", "runtime"),
        gpu=resource("shift_evaluate", "gpu"),
    params:
        root=lambda wildcards: f"{SHIFT_ROOT}/{wildcards.size}",
        corruptions=lambda wildcards: ",".join(SHIFT_CORRUPTIONS[wildcards.task]),
        data_on=config["data_on"],
    shell:
        "medgrid evaluate --checkpoint {input.model} --data-dir $(dirname {input.data}) --data {input.data} --shift-dir {params.root} --shift-corruptions {params.corruptions} --no-clean --out {output.table} --data-on {params.data_on} --threads {threads} > {log} 2>&1"


if SHIFT["enabled"]:
    RESULT_TABLES.extend(grid_paths(rules.shift_evaluate.output.table))
