"""medgrid's plain-Python tables (the workflow builds the DAG from them) against the libraries they come from:
medmnist's INFO, medmnistc's corruption registry and AlexNet baselines, the synthetic generator."""

import pytest

from medgrid import catalog, names
from medgrid.data import corruptions, synthetic, tasks


def test_split_table_equals_medmnist_and_the_synthetic_defaults():
    import medmnist

    assert set(catalog.SPLIT_IMAGES) == set(names.TASKS)
    for task in names.MEDMNIST_2D:
        info = medmnist.INFO[task]
        n = info["n_samples"]
        assert catalog.SPLIT_IMAGES[task] == (n["train"], n["val"], n["test"], info["n_channels"]), task
    import inspect

    d = {k: v.default for k, v in inspect.signature(synthetic.generate).parameters.items()}
    assert {k: d[k] for k in catalog.SYNTHETIC_DEFAULTS} == catalog.SYNTHETIC_DEFAULTS
    for task in names.SYNTHETIC_TASKS:
        assert catalog.SPLIT_IMAGES[task] == (d["n_train"], d["n_val"], d["n_test"], synthetic.n_channels(task))
        assert catalog.channels(task) == tasks.task_info(task).n_channels


def test_corruption_table_equals_medmnistc():
    pytest.importorskip("medmnistc")
    from medmnistc.utils.baselines import BASELINES

    registry = corruptions._medmnistc_registry()
    for task in names.MEDMNIST_2D:
        assert catalog.MEDMNISTC[task] == tuple(registry.CORRUPTIONS_DS[task]), task
        assert catalog.MEDMNISTC[task] == tuple(BASELINES[task]["raw_scores"]), task  # BE / rBE need each
        assert catalog.shift_sets(task) == catalog.MEDMNISTC[task] + (names.RESAMPLE_CONTROL,)
    for name, flag in catalog.SYNTHETIC_SUITE.items():
        assert name in registry.CORRUPTIONS_DS[flag]
    for task in names.SYNTHETIC_TASKS:
        assert catalog.shift_sets(task) == tuple(catalog.SYNTHETIC_SUITE) + (names.TEXTURE_SHUFFLED,
                                                                              names.RESAMPLE_CONTROL)
    assert all(corruptions.corruption_names(t) == catalog.shift_sets(t) for t in names.TASKS)


def test_file_names_are_medmnists():
    assert catalog.file_stem("breastmnist", 28) == "breastmnist"
    assert catalog.file_stem("pathmnist", "224") == "pathmnist_224"
    assert tasks.npz_path("d", "synthetic-rgb", 64).as_posix() == "d/synthetic-rgb_64.npz"
