# medgrid: the robustness-accuracy grid of MedMNIST classifiers.
#   snakemake --cores all --use-conda                     # the paper grid (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml   # offline synthetic demo, minutes on a laptop
#   snakemake --profile profiles/slurm                    # the same DAG on a SLURM cluster
# See docs/workflow.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/shift.smk"
include: "workflow/rules/report.smk"


# after every rule has chosen its conda env (workflow/rules/common.smk)
set_conda_cuda_override()


rule all:
    default_target: True
    input:
        all_targets(),
