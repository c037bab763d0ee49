"""No silent nonsense and no work thrown away: checkpoints that prove they are intact, outputs checked before the
work, several outputs written all or nothing, leftovers of a killed run cleaned up."""

from __future__ import annotations

import pickle

import pytest
import torch

from medgrid import atomic, checkpoint, cli, models
from medgrid.errors import UserError

SETTINGS = {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "none", "eps": 0.0, "seed": 0,
            "train_data": "original", "n_channels": 1, "n_classes": 4}


def one_line_error(capsys, *argv) -> str:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("medgrid: error:"), err
    return err


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    checkpoint.save(path, models.build("cnn-small", 1, 4, 28), SETTINGS)
    return path


def test_a_flipped_byte_in_the_weights_is_refused(saved):
    checkpoint.load(saved)  # intact: loads
    blob = torch.load(saved, weights_only=True)
    weight = next(k for k, v in blob["state_dict"].items() if v.is_floating_point() and v.numel() > 100)
    blob["state_dict"][weight].view(-1)[17] += 1e-3  # one weight of one layer, slightly off
    torch.save(blob, saved)
    with pytest.raises(UserError, match="corrupt: its weights differ"):
        checkpoint.load(saved)
    with pytest.raises(UserError, match="corrupt"):
        checkpoint.read_settings(saved)  # the history reads settings only, and still checks


def test_bytes_inverted_on_disk_are_refused(saved):
    raw = bytearray(saved.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 2000] = bytes(255 - b for b in raw[middle:middle + 2000])
    saved.write_bytes(bytes(raw))
    with pytest.raises(UserError) as e:
        checkpoint.load(saved)
    assert str(saved) in str(e.value) and "\n" not in str(e.value)


def test_edited_settings_are_refused(saved):
    blob = torch.load(saved, weights_only=True)
    blob["settings"]["eps"] = 8 / 255
    torch.save(blob, saved)
    with pytest.raises(UserError, match="corrupt: its settings differ"):
        checkpoint.load(saved)


def test_settings_that_disagree_with_the_weights_are_one_line(tmp_path):
    path = tmp_path / "m.pt"
    model = models.build("cnn-small", 1, 4, 28)
    checkpoint.save(path, model, {**SETTINGS, "n_classes": 5})  # consistent digests, inconsistent content
    with pytest.raises(UserError, match="weights do not fit its settings") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)


def test_checkpoints_of_older_versions_load_unchecked(tmp_path):
    path = tmp_path / "old.pt"
    model = models.build("cnn-small", 1, 4, 28)
    torch.save({"state_dict": model.state_dict(), "settings": SETTINGS}, path)
    assert checkpoint.load(path)[1]["task"] == "synthetic"


def test_foreign_pickles_are_not_called_checkpoints(tmp_path, capsys):
    path = tmp_path / "random.pt"
    path.write_bytes(pickle.dumps({"a": object}))
    err = one_line_error(capsys, "history", path, "--out", tmp_path / "h.parquet")
    assert "not a medgrid checkpoint" in err and "weights_only=False" not in err
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not a medgrid checkpoint" in one_line_error(capsys, "history", tmp_path / "other.pt", "--out",
                                                        tmp_path / "h.parquet")
    assert not (tmp_path / "h.parquet").exists()


def test_outputs_that_are_folders_are_refused_before_the_work(tmp_path, capsys, saved):
    (tmp_path / "out").mkdir()
    for argv in (["history", saved, "--out", tmp_path / "out"],
                 ["aggregate", tmp_path / "t.parquet", "--out", tmp_path / "out"],
                 ["train", "--task", "synthetic", "--arch", "cnn-small", "--norm", "none", "--data",
                  tmp_path / "missing.npz", "--out", tmp_path / "out"],
                 ["evaluate", "--checkpoint", saved, "--data", tmp_path / "missing.npz", "--out", tmp_path / "out"]):
        assert "is an existing folder" in one_line_error(capsys, *argv)
    err = one_line_error(capsys, "evaluate", "--checkpoint", saved, "--data", tmp_path / "missing.npz", "--out",
                         tmp_path / "e.csv", "--csv")
    assert "two outputs are the same file" in err or "would be the table itself" in err


def test_several_outputs_are_written_all_or_none(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError):
        with atomic.atomic_outputs(a, b) as (ta, tb):
            ta.write_text("a")
            raise RuntimeError("killed half way")
    assert not a.exists() and not b.exists() and list(tmp_path.iterdir()) == []
    with atomic.atomic_outputs(a, b) as (ta, tb):
        ta.write_text("a")
        tb.write_text("b")
    assert a.read_text() == "a" and b.read_text() == "b"


def test_a_killed_runs_temp_file_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "table.parquet"
    leftover = tmp_path / ".table.parquet.abc123.tmp"  # what SIGKILL during a write leaves
    leftover.write_bytes(b"")
    other = tmp_path / ".other.parquet.abc123.tmp"  # another output's: not ours to remove
    other.write_bytes(b"")
    with atomic.atomic_output(out) as tmp:
        tmp.write_text("x")
    assert out.read_text() == "x" and not leftover.exists() and other.exists()


# ------------------------------------------------------------------ the training and evaluation commands


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small synthetic task (its own file name) and a standard cnn-small trained one epoch on it."""
    from medgrid.data import prepare, tasks

    d = tmp_path_factory.mktemp("tiny")
    data = tasks.npz_path(d, "synthetic", 28)
    prepare.prepare("synthetic", 28, data, data_seed=0, n_train=256, n_val=64, n_test=64)
    model = d / "model.pt"
    assert cli.main([str(a) for a in ("train", "--task", "synthetic", "--arch", "cnn-small", "--norm", "none",
                                      "--data", data, "--out", model, "--epochs", "1", "--batch-size", "64",
                                      "--threads", "1")]) == 0
    return data, model


@pytest.mark.parametrize("flag,value", [("--lr", "nan"), ("--weight-decay", "nan"), ("--lr", "inf"),
                                        ("--stop-train-acc", "5"), ("--stop-train-acc", "-1"),
                                        ("--momentum", "-1"), ("--attack-step-size", "-1"), ("--batch-size", "0")])
def test_train_refuses_nonsense_numbers_before_the_data(tmp_path, capsys, flag, value):
    out = tmp_path / "m.pt"
    err = one_line_error(capsys, "train", "--task", "synthetic", "--arch", "cnn-small", "--norm", "linf", "--eps",
                         "2/255", "--data", tmp_path / "missing.npz", "--out", out, flag, value)
    assert flag in err and "must be" in err and not out.exists()


def test_training_that_diverges_stops_without_a_checkpoint(tiny, tmp_path, capsys):
    data, _ = tiny
    out = tmp_path / "m.pt"
    err = one_line_error(capsys, "train", "--task", "synthetic", "--arch", "cnn-small", "--norm", "none", "--data",
                         data, "--out", out, "--epochs", "2", "--batch-size", "64", "--lr", "1e30", "--threads", "1")
    assert "training diverged" in err and "no checkpoint written" in err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("flag,value", [("--batch-size", "-1"), ("--batch-size", "0"), ("--strong-iterations", "0"),
                                        ("--sanity-tolerance", "1"), ("--square-queries", "0")])
def test_evaluate_refuses_nonsense_numbers(tiny, tmp_path, capsys, flag, value):
    data, model = tiny
    out = tmp_path / "e.parquet"
    err = one_line_error(capsys, "evaluate", "--checkpoint", model, "--data", data, "--out", out, flag, value)
    assert flag in err and not out.exists()


def test_evaluate_refuses_another_tasks_file_and_warns_of_other_data(tiny, tmp_path, capsys):
    data, model = tiny
    other = tmp_path / "breastmnist.npz"
    other.write_bytes(data.read_bytes())
    err = one_line_error(capsys, "evaluate", "--checkpoint", model, "--data", other, "--out", tmp_path / "e.parquet")
    assert "breastmnist's data, not synthetic's" in err
    from medgrid.data import prepare, tasks

    (tmp_path / "again").mkdir()
    regenerated = tasks.npz_path(tmp_path / "again", "synthetic", 28)
    prepare.prepare("synthetic", 28, regenerated, data_seed=1, n_train=256, n_val=64, n_test=64)
    assert cli.main(["evaluate", "--checkpoint", str(model), "--data", str(regenerated), "--out",
                     str(tmp_path / "e.parquet"), "--threads", "1"]) == 0
    assert "differs from the data" in capsys.readouterr().err


def test_failed_masking_checks_are_warning_lines():
    import pandas as pd

    from medgrid import results
    from medgrid.evaluation import sanity

    cell = results.cell_columns(SETTINGS)
    rows = []
    for check, measured, passed in (("black_box", 0.03, False), ("monotone", 0.0, True)):
        common = dict(eval_kind="sanity", eval_norm="linf", eval_eps=4 / 255, n=100)
        rows += [results.make_row(cell, metric=check, value=float(passed), **common),
                 results.make_row(cell, metric=sanity.MEASURED[check], value=measured, **common)]
    lines = sanity.check_messages(pd.DataFrame(rows))
    assert lines == ["gradient-masking check black_box failed at linf eps 0.01569: Square broke 3.0% of the "
                     "samples that no white-box attack broke (100 samples); robust accuracy may be overstated "
                     "(docs/evaluation.md)"]
