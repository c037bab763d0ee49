"""The names medgrid's modules, its command line, its results table and its workflow share.

One home for each: a module that needs a list of norms, tasks or training-data kinds imports it
from here. This module imports nothing, so the command line can build its parser from it without
loading torch. The Snakefile keeps copies of a few (it runs without medgrid installed);
tests/test_architecture.py pins those copies equal to these.
"""

# ------------------------------------------------------------------------------------------ norms
TRAIN_NORMS = ("none", "linf", "l2")  # "none": standard training (epsilon 0)
ATTACK_NORMS = ("linf", "l2")
NO_NORM = "none"  # the eval_norm of a row that involves no attack

# ------------------------------------------------------------------------------------------ tasks
MEDMNIST_2D = (
    "pathmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)
SYNTHETIC_TASKS = ("synthetic", "synthetic-rgb")
TASKS = MEDMNIST_2D + SYNTHETIC_TASKS
SIZES = (28, 64, 128, 224)  # MedMNIST+ sizes
SYNTHETIC_SIZES = SIZES  # the synthetic tasks are generated at every MedMNIST+ size
SPLITS = ("train", "val", "test")
ARCHS = ("cnn-small", "resnet18", "preact-resnet18")  # the model registry's names (medgrid.models.MODELS)

# ------------------------------------------------------------------------------ training data
# What a model was trained on: the task's own data, or one of Ilyas et al.'s constructed datasets.
TRAIN_DATA = ("original", "drand", "ddet", "drobust")
NONROBUST_MODES = {"rand": "drand", "det": "ddet"}  # `medgrid features nonrobust --mode` -> train_data
RAND_TARGETS = ("all", "other")  # D_rand targets: uniform over all classes, or over the classes != y
ROBUST_INITS = ("other", "noise")  # D_R starts: another training image, or uniform noise
# the construction column of rows not about a D_rand / D_det dataset of an attack setting (and of tables
# written before the setting was recorded); otherwise the setting's token (medgrid.constructions)
NO_CONSTRUCTION = "none"

# ------------------------------------------------------------------------------- results table
# eval_kind: what produced a row. clean; white-box attacks (pgd, and the strong evaluation's stages apgd-ce,
# apgd-t, apgd-t-margin); the black-box square attack; the transfer attack from the standard model; the
# per-sample worst case over every attack run on a sample (worst) and over the white-box ones only
# (worst-white-box); clean and PGD accuracy on the strong evaluation's images (clean-subset, pgd-subset);
# MedMNIST-C (corruption); how an Ilyas dataset was made (features); the gradient-masking checks (sanity,
# metric = the check, value 1 pass / 0 fail); the training-health flags (health).
EVAL_KINDS = ("clean", "pgd", "apgd-ce", "apgd-t", "worst", "square", "transfer", "corruption", "features",
              "sanity", "health", "apgd-t-margin", "worst-white-box", "clean-subset", "pgd-subset")
WHITE_BOX_KINDS = ("pgd", "apgd-ce", "apgd-t", "apgd-t-margin")  # the gradient-based attacks
ROBUST_KINDS = WHITE_BOX_KINDS + ("square", "transfer")  # every attack whose finds enter "worst", in display order
# the strong evaluation's attacks (config evaluate.strong.attacks; medgrid.attacks.stages) and schedules
STRONG_ATTACKS = ("apgd-ce", "apgd-t", "square")
STRONG_SCHEDULES = ("adaptive", "full")
SANITY_CHECKS = ("monotone", "unbounded", "pgd_vs_worst", "black_box", "transfer")  # metrics of sanity rows
CHART_METRICS = ("balanced_acc", "acc")  # the metrics `medgrid charts --metric` can show
# the headline table's columns (`medgrid table --columns`, config headline.columns), in display order:
# clean, robust at one epsilon per attack norm, MedMNIST-C mean, BE, rBE, models trained on D_rand / D_det
# (clean balanced accuracy, then AUC) and D_R
HEADLINE_COLUMNS = ("clean", "robust_linf", "robust_l2", "corruption", "be", "rbe", "drand", "drand_auc", "ddet",
                    "ddet_auc", "drobust")
HEALTH_METRIC = "degenerate"  # eval_kind health: 1.0 when a cell predicts one class or sits at chance
# the rows of eval_kind "health" (medgrid/health.py): degenerate 1.0 when the model predicts one class on
# the test split or its balanced accuracy is within DEGENERATE_MARGIN of chance (1 / classes), else 0.0;
# predicted_classes, the number of classes it predicts; chance_margin, balanced accuracy minus chance
HEALTH_METRICS = ("degenerate", "predicted_classes", "chance_margin")
DEGENERATE_MARGIN = 0.02

# ---------------------------------------------------------------------------------- MedMNIST-C
SEVERITIES = (1, 2, 3, 4, 5)
SHIFT_SOURCES = ("download", "generate")
CORRUPT_AT = ("224", "model_size")
UPSAMPLING = ("nearest", "bicubic")
NO_CORRUPTION = "none"  # the corruption of a row that is not a corruption measurement
TEXTURE_SHUFFLED = "texture_shuffled"  # the synthetic tasks' counterfactual test set
CORRUPTION_MEAN = "mean"  # the corruption of rows averaged over a task's corruptions
RESAMPLE_CONTROL = "resample_control"  # the clean test set sent through the corrupted sets' resize path
NOT_ON_ZENODO = ("tissuemnist",)  # MedMNIST-C publishes every task but TissueMNIST-C

# ------------------------------------------------------------------------------------- training
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
SELECTIONS = ("best_val", "last")  # the epoch a run keeps: best validation balanced accuracy, or the last
# where a command holds its splits: on the compute device, or in (pinned) host memory with batches
# streamed to the device; auto: on the device when they take at most half of its free memory
DATA_ON = ("auto", "device", "host")

# ----------------------------------------------------------------------------- training methods
# How adversarial training turns a batch into a loss (medgrid/training/methods.py): Madry et al.'s PGD-AT, the
# default (standard training is the epsilon-0 point of every method and is recorded as it); TRADES (Zhang et
# al. 2019); FGSM from a random start with the catastrophic-overfitting guard (Wong et al. 2020).
TRAIN_METHODS = ("pgd", "trades", "fgsm-rs")
DEFAULT_METHOD = "pgd"
METHOD_PARAMS = {"trades": ("beta", 6.0)}  # a method's one parameter: its name (a train flag) and its default
SINGLE_STEP_METHODS = ("fgsm-rs",)  # methods that take one attack step (no attack_steps setting)
# the health row of a run with the guard (fgsm-rs): 1.0 when PGD accuracy on its fixed training batch fell by
# more than OVERFIT_DROP from one epoch to the next, so the run stopped and kept an epoch before the collapse
OVERFIT_METRIC = "catastrophic_overfitting"
OVERFIT_DROP = 0.2
