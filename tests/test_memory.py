"""Large images within memory: splits read straight into place, chunked statistics, float batches made one at
a time, data placement on a GPU, the synthetic tasks at 128 and 224 px, and the workflow's memory requests.

The memory itself is measured by benchmarks/memory.py; these tests pin what makes it small (no whole numpy
copy of a split while loading, statistics equal to the whole-split formula) and that the results stay the
same.
"""

from __future__ import annotations

import re
import tracemalloc
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from medgrid import cli, models, names
from medgrid.attacks.sweep import robust_predictions
from medgrid.data import loading, npz, placement, prepare, synthetic, tasks
from medgrid.errors import UserError
from medgrid.evaluation import predict

SMALL = dict(n_train=300, n_val=20, n_test=40)


# ------------------------------------------------------------------------------- reading the npz


@pytest.mark.parametrize("task,size,writer,tail", [
    ("pathmnist", 64, np.savez_compressed, ()),   # RGB, compressed (MedMNIST's own files)
    ("breastmnist", 28, np.savez, ()),            # grey, stored
    ("breastmnist", 28, np.savez_compressed, (1,)),  # grey kept as (N, H, W, 1)
])
def test_chunked_read_equals_numpy(tmp_path, monkeypatch, task, size, writer, tail):
    info = tasks.task_info(task)
    rng = np.random.default_rng(1)
    c = (info.n_channels,) if info.n_channels > 1 else tail
    arrays = {}
    for split, n in zip(names.SPLITS, (37, 5, 11)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size) + c, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % info.n_classes).astype(np.uint8)[:, None]
    writer(tasks.npz_path(tmp_path, task, size), **arrays)
    # a few rows per chunk, so every split is read in several pieces (and one piece is short)
    monkeypatch.setattr(npz, "READ_CHUNK", 3 * size * size * info.n_channels + 1)
    ds = loading.load(task, size, tasks.npz_path(tmp_path, task, size))
    for split in names.SPLITS:
        want = arrays[f"{split}_images"]
        want = want[:, None] if want.ndim == 3 else want.transpose(0, 3, 1, 2)
        got = getattr(ds, split)
        assert got.images.is_contiguous() and np.array_equal(got.images.numpy(), want)
        assert got.labels.tolist() == arrays[f"{split}_labels"].ravel().tolist()
    assert ds.data_on == "host" and ds.nbytes == sum(a.size for k, a in arrays.items() if k.endswith("images"))


def test_load_reads_only_the_splits_asked_for(tmp_path, fake_medmnist):
    fake_medmnist(tmp_path, "pathmnist", 28, n=(30, 4, 6))
    ds = loading.load("pathmnist", 28, tasks.npz_path(tmp_path, "pathmnist", 28), splits=("test",))
    assert ds.train is None and ds.val is None and ds.test.images.shape == (6, 3, 28, 28)
    assert ds.nbytes == 6 * 3 * 28 * 28
    # every split is still validated from its header and labels
    path = tasks.npz_path(tmp_path, "pathmnist", 28)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["train_labels"][0] = 9
    np.savez_compressed(path, **arrays)
    with pytest.raises(UserError, match="train_labels"):
        loading.load("pathmnist", 28, tasks.npz_path(tmp_path, "pathmnist", 28), splits=("test",))


def test_load_holds_no_numpy_copy_of_a_split(tmp_path, fake_medmnist):
    """The loader decompresses into the final tensor: the Python-side memory it allocates on the way (zip
    buffers, the reused chunk) stays a small fraction of the images, where np.load held each split whole."""
    path = fake_medmnist(tmp_path, "pathmnist", 128, n=(600, 20, 20))  # 31 MB of images
    images = 640 * 128 * 128 * 3
    tracemalloc.start()
    try:
        loading.load("pathmnist", 128, tasks.npz_path(tmp_path, "pathmnist", 128))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with np.load(path) as z:
            z["train_images"]
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert numpy_peak >= 600 * 128 * 128 * 3  # the check sees numpy's arrays
    assert peak < images / 4, (peak, images)


def test_cut_short_member_is_a_user_error(tmp_path):
    """A member whose stored data end early (a valid zip around a truncated .npy) is refused in one line."""
    path = tasks.npz_path(tmp_path, "breastmnist", 28)
    arrays = {f"{s}_{k}": (np.zeros((4, 28, 28), np.uint8) if k == "images" else np.zeros((4, 1), np.uint8))
              for s in names.SPLITS for k in ("images", "labels")}
    np.savez(path, **arrays)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["train_images.npy"] = members["train_images.npy"][:-100]
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    assert "not a readable npz" in str(e.value) and "cut short" in str(e.value) and "\n" not in str(e.value)


def test_no_memory_for_the_images_is_one_line(tmp_path, fake_medmnist, monkeypatch):
    fake_medmnist(tmp_path, "breastmnist", 28, n=(10, 3, 5))
    real = torch.empty

    def empty(*args, **kw):
        if kw.get("dtype") is torch.uint8:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 7840 bytes.\n"
                               "Error code 12")
        return real(*args, **kw)

    monkeypatch.setattr(torch, "empty", empty)
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    msg = str(e.value)
    assert "\n" not in msg and "not enough memory" in msg and "train_images" in msg and "in host memory" in msg


def test_write_npz_writes_strided_views_as_their_copies(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    view = x.transpose(0, 2, 3, 1)  # NCHW memory seen as NHWC: neither C- nor F-contiguous
    a = npz.write_npz(tmp_path / "a.npz", {"test_images": view})
    b = npz.write_npz(tmp_path / "b.npz", {"test_images": np.ascontiguousarray(view)})
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------------------------- statistics


def _old_fit(images):
    """Normalize.fit before chunking: the whole split as float32, reduced by torch."""
    x = images.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)


@pytest.mark.parametrize("task", names.SYNTHETIC_TASKS)
def test_fit_of_a_28px_split_is_the_old_formula_exactly(tmp_path, task):
    path = prepare.prepare(task, 28, tasks.npz_path(tmp_path, task, 28), data_seed=0)  # the demo's split: 4000 images
    images = loading.load(task, 28, path).train.images
    assert images.numel() <= models.FIT_CHUNK
    norm = models.Normalize(images.shape[1])
    norm.fit(images)
    mean, std = _old_fit(images)
    assert torch.equal(norm.mean.flatten(), mean) and torch.equal(norm.std.flatten(), std)


def test_chunked_statistics_match_the_whole_split(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (203, 3, 16, 16), dtype=torch.uint8, generator=g)
    images[:, 1] //= 4  # channels with different statistics
    exact = images.double() / 255
    want_mean, want_std = exact.mean(dim=(0, 2, 3)), exact.std(dim=(0, 2, 3))
    for chunk in (1, 768, 5000, 10**9):  # one image per chunk .. the whole split in one
        mean, std = models.channel_stats(images, chunk=chunk)
        assert mean.dtype == std.dtype == torch.float32
        torch.testing.assert_close(mean.double(), want_mean, rtol=1e-6, atol=0)
        torch.testing.assert_close(std.double(), want_std, rtol=1e-6, atol=0)
    # above FIT_CHUNK, Normalize.fit takes the chunked path, and agrees with the old formula to float precision
    monkeypatch.setattr(models, "FIT_CHUNK", 4096)
    norm = models.Normalize(3)
    norm.fit(images)
    old_mean, old_std = _old_fit(images)
    torch.testing.assert_close(norm.mean.flatten(), old_mean, rtol=1e-5, atol=0)
    torch.testing.assert_close(norm.std.flatten(), old_std, rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------ batches, placement


def test_predict_batch_keeps_its_pixels():
    def split(size):
        return loading.Split(torch.zeros((1, 3, size, size), dtype=torch.uint8), torch.zeros(1, dtype=torch.int64))

    assert predict.default_batch_size(split(28)) == 1000  # as before at 28 px
    assert predict.default_batch_size(split(64)) == 191
    assert predict.default_batch_size(split(224)) == 15


def test_pgd_on_uint8_images_equals_pgd_on_their_float_copy():
    torch.manual_seed(0)
    model = models.build("cnn-small", 1, 4, 28).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (23, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (23,), generator=g)
    kw = dict(norm="linf", eps_list=[2 / 255, 8 / 255], steps=3, seed=5, batch_size=8)
    a = robust_predictions(model, x, y, **kw)
    b = robust_predictions(model, loading.as_float(x), y, **kw)
    for ra, rb in zip(a, b):
        assert torch.equal(ra.pred, rb.pred) and ra.grad_evals == rb.grad_evals


def test_placement_decision():
    gib = 2**30
    assert placement.choose(100 * gib, "cpu") == "host"  # a CPU's device memory is the host's
    assert placement.choose(1, "cpu", "device") == "host"
    # auto on a GPU: on the device when the splits take at most half of its free memory
    assert placement.choose(16 * gib, "cuda", free_bytes=140 * gib) == "device"
    assert placement.choose(16 * gib, "cuda:0", free_bytes=23 * gib) == "host"
    assert placement.choose(int(11.5 * gib), "cuda", free_bytes=23 * gib) == "device"
    # the flag overrides the decision
    assert placement.choose(16 * gib, "cuda", "device", free_bytes=1 * gib) == "device"
    assert placement.choose(1, "cuda", "host", free_bytes=140 * gib) == "host"
    with pytest.raises(UserError, match="placement"):
        placement.choose(1, "cuda", "gpu")
    assert placement.pinned("cuda", "host") and not placement.pinned("cpu", "host")
    assert not placement.pinned("cuda", "device")


def test_placement_asks_the_driver_for_free_memory(monkeypatch):
    asked = []

    def free(device):
        asked.append(str(device))
        return 8 * 2**30

    monkeypatch.setattr(placement, "free_device_memory", free)
    assert placement.choose(3 * 2**30, "cuda:1") == "device"
    assert placement.choose(5 * 2**30, "cuda:1") == "host"
    assert asked == ["cuda:1", "cuda:1"]


# ----------------------------------------------------------------------------- synthetic tasks


def test_synthetic_values_do_not_depend_on_the_assembly_block(monkeypatch):
    want = synthetic.generate("synthetic-rgb", 64, seed=2, n_train=23, n_val=3, n_test=3)
    for block in (1, 7, 500):
        monkeypatch.setattr(synthetic, "_BLOCK", block)
        got = synthetic.generate("synthetic-rgb", 64, seed=2, n_train=23, n_val=3, n_test=3)
        assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("size", [128, 224])
def test_synthetic_tasks_at_large_sizes(tmp_path, size):
    path = prepare.prepare("synthetic", size, tasks.npz_path(tmp_path, "synthetic", size), data_seed=0, n_train=16, n_val=4, n_test=4)
    assert path.name == f"synthetic_{size}.npz"
    ds = loading.load("synthetic", size, tasks.npz_path(tmp_path, "synthetic", size))
    assert ds.train.images.shape == (16, 1, size, size)
    # the class pattern is planted at this size too: image with texture minus image without is +-k x pattern
    a = synthetic.generate("synthetic", size, seed=0, n_train=16, n_val=1, n_test=1)
    b = synthetic.generate("synthetic", size, seed=0, amplitude=0, n_train=16, n_val=1, n_test=1)
    pattern = synthetic.texture_patterns(4, size, seed=0).astype(int)[a["train_labels"].ravel()]
    agree = (a["train_images"].astype(int) - b["train_images"].astype(int)) == 4 * pattern
    assert agree.mean() > 0.999


# ------------------------------------------------------------------------ a 224-px cell by the CLI


def test_train_and_evaluate_a_224px_cell_through_the_cli(tmp_path, capsys):
    prepare.prepare("synthetic-rgb", 224, tasks.npz_path(tmp_path, "synthetic-rgb", 224), data_seed=0, n_train=24, n_val=8, n_test=8)
    model = tmp_path / "m.pt"
    table = tmp_path / "eval.parquet"
    code = cli.main(["train", "--task", "synthetic-rgb", "--size", "224", "--arch", "cnn-small", "--norm", "linf",
                     "--eps", "2/255", "--attack-steps", "1", "--epochs", "1", "--batch-size", "8",
                     "--data", str(tmp_path / "synthetic-rgb_224.npz"), "--out", str(model), "--threads", "1",
                     "--device", "cpu",
                     "--data-on", "auto"])
    out = capsys.readouterr().out
    assert code == 0 and model.is_file()
    assert "data: 4.6 MiB of images in host memory" in out  # train + val: 32 x 3 x 224 x 224 bytes
    settings = torch.load(model, weights_only=True)["settings"]
    assert (settings["size"], settings["data_on"], settings["device"]) == (224, "host", "cpu")
    code = cli.main(["evaluate", "--checkpoint", str(model), "--data", str(tmp_path / "synthetic-rgb_224.npz"),
                     "--out", str(table),
                     "--attack-norm", "linf", "--attack-eps", "2/255", "--attack-steps", "2", "--batch-size", "4",
                     "--threads", "1", "--device", "cpu"])
    assert code == 0
    rows = pd.read_parquet(table)
    assert set(rows["size"]) == {224} and set(rows["eval_kind"]) == {"clean", "health", "pgd"}
    assert set(rows["n"]) == {8}
    acc = rows.set_index(["eval_kind", "metric"])["value"]
    assert 0 <= acc["pgd", "acc"] <= acc["clean", "acc"] <= 1


# ------------------------------------------------------------------------------ workflow memory


def test_workflow_memory_requests_grow_with_the_images(tmp_path):
    from test_workflow import copy_workflow, snakemake, write_yaml

    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "sizes.yaml", {"tasks": ["pathmnist", "synthetic"], "sizes": [28, 224],
                                                "archs": ["cnn-small"], "seeds": [0],
                                                "train_grid": {"none": [0]}, "data_on": "host"})
    proc = snakemake(work, "--dry-run", "--configfile", "config/sizes.yaml")
    mem, shell = {}, {}
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\S+):", block)
        output = re.search(r"^    output: (\S+?),?$", block, re.M)
        if rule and output:
            key = (rule.group(1), output.group(1))
            mem[key] = int(re.search(r"\bmem_mb=(\d+)", block).group(1))
            shell[key] = block
    base = {"train": 16000, "evaluate": 16000, "prepare_data": 8000}  # config/config.yaml resources

    def mib(task, size, n):
        return n * size * size * (3 if task == "pathmnist" else 1) / 2**20

    path224 = "results/pathmnist/224/cnn-small/none-0/seed0/model.pt"
    assert mem["train", path224] == base["train"] + int(np.ceil(1.5 * mib("pathmnist", 224, 89996 + 10004)))
    assert mem["train", path224.replace("224", "28")] == base["train"] + int(np.ceil(
        1.5 * mib("pathmnist", 28, 89996 + 10004)))
    ev = "results/synthetic/224/cnn-small/none-0/seed0/metrics/eval.parquet"
    assert mem["evaluate", ev] == base["evaluate"] + int(np.ceil(1.5 * mib("synthetic", 224, 1000)))
    # MedMNIST's prepare-data holds the test split (medmnist's download), the synthetic generator all splits
    assert mem["prepare_data", "resources/data/pathmnist_224.npz"] == base["prepare_data"] + int(np.ceil(
        1.5 * mib("pathmnist", 224, 7180)))
    assert mem["prepare_data", "resources/data/synthetic_224.npz"] == base["prepare_data"] + int(np.ceil(
        1.5 * mib("synthetic", 224, 5500)))
    assert "--data-on host" in shell["train", path224] and "--data-on host" in shell["evaluate", ev]


def test_the_mmap_threshold_is_fixed_for_large_images_only(monkeypatch, tmp_path):
    """glibc's dynamic mmap threshold grew evaluate's heap by 2.4 bytes per byte of 224-px images, and a fixed
    1 MiB one taxes every 28-px batch: loading images of 128 px or more fixes it (medgrid.heap), smaller ones
    keep glibc's, and a user's MALLOC_MMAP_THRESHOLD_ wins."""
    import platform

    from medgrid import heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    calls = []
    monkeypatch.setattr(heap, "fix_mmap_threshold", lambda: calls.append(1) or True)
    for size in (28, 64):
        path = prepare.prepare("synthetic", size, tmp_path / f"s{size}.npz", n_train=4, n_val=4, n_test=4)
        loading.load("synthetic", size, path)
    assert calls == []
    path = prepare.prepare("synthetic", 128, tmp_path / "s128.npz", n_train=4, n_val=4, n_test=4)
    loading.load("synthetic", 128, path, splits=("test",))
    assert calls == [1]
    monkeypatch.undo()
    assert heap.fix_mmap_threshold() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert heap.fix_mmap_threshold() is False
