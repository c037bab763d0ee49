"""Every user mistake gives one line on stderr and exit 2, and leaves no output behind."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medgrid import cli
from medgrid.data import prepare

PY = sys.executable


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepare.prepare("synthetic", 28, d / "synthetic.npz", data_seed=0)
    return d


def run(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medgrid: error:")
    for needle in needles:
        assert needle in err, err


def train_args(d, out, **over):
    args = dict(task="synthetic", size="28", arch="cnn-small", norm="none", eps="0", seed="0",
                **{"data": str(d / "synthetic.npz"), "out": str(out), "epochs": "1"})
    args.update(over)
    return [x for k, v in args.items() for x in (f"--{k}", v)]


@pytest.mark.parametrize("over,needles", [
    ({"task": "nosuchmnist"}, ["unknown task", "pathmnist"]),
    ({"task": "chestmnist"}, ["chestmnist"]),
    ({"arch": "vgg"}, ["unknown arch", "cnn-small"]),
    ({"norm": "linf", "eps": "-0.5"}, ["bad epsilon"]),
    ({"norm": "linf", "eps": "two"}, ["bad epsilon"]),
    ({"norm": "none", "eps": "2/255"}, ["norm linf or l2"]),
    ({"norm": "linf", "eps": "0"}, ["needs eps > 0"]),
    ({"norm": "l1"}, ["invalid choice"]),
    ({"size": "30"}, ["size"]),
])
def test_train_bad_input(capsys, synth_dir, tmp_path, over, needles):
    out = tmp_path / "m.pt"
    code, err = run(capsys, "train", *train_args(synth_dir, out, **over))
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_missing_and_corrupt_data(capsys, tmp_path):
    out = tmp_path / "m.pt"
    code, err = run(capsys, "train", *train_args(tmp_path, out))
    assert_one_line_error(code, err, "synthetic.npz", "medgrid prepare-data")
    (tmp_path / "synthetic.npz").write_bytes(b"garbage")
    code, err = run(capsys, "train", *train_args(tmp_path, out))
    assert_one_line_error(code, err, "synthetic.npz")
    np.savez(tmp_path / "synthetic.npz", train_images=np.zeros((4, 28, 28), np.uint8))
    code, err = run(capsys, "train", *train_args(tmp_path, out))
    assert_one_line_error(code, err, "synthetic.npz")
    assert not out.exists()


def test_labels_out_of_range(capsys, tmp_path):
    arrays = {f"{s}_images": np.zeros((8, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.full((8, 1), 7, np.uint8) for s in ("train", "val", "test")})
    np.savez(tmp_path / "synthetic.npz", **arrays)
    code, err = run(capsys, "train", *train_args(tmp_path, tmp_path / "m.pt"))
    assert_one_line_error(code, err, "label")


def test_unwritable_output(capsys, synth_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = run(capsys, "train", *train_args(synth_dir, blocker / "m.pt"))
    assert_one_line_error(code, err, "cannot create output folder")


def test_evaluate_bad_input(capsys, synth_dir, tmp_path):
    code, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(synth_dir / "synthetic.npz"),
                    "--out", str(tmp_path / "t.parquet"), "--attack-norm", "linf", "--attack-eps", "1/255")
    assert_one_line_error(code, err, "missing checkpoint")
    (tmp_path / "bad.pt").write_bytes(b"xx")
    code, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(synth_dir / "synthetic.npz"),
                    "--out", str(tmp_path / "t.parquet"))
    assert_one_line_error(code, err, "cannot read checkpoint")
    code, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(synth_dir / "synthetic.npz"),
                    "--out", str(tmp_path / "t.parquet"), "--attack-norm", "linf", "--attack-eps", "1/255,-2")
    assert_one_line_error(code, err, "bad epsilon")
    code, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(synth_dir / "synthetic.npz"),
                    "--out", str(tmp_path / "t.parquet"), "--attack-norm", "l7", "--attack-eps", "1")
    assert_one_line_error(code, err, "unknown attack norm")
    base = ["evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(synth_dir / "synthetic.npz"),
            "--out", str(tmp_path / "t.parquet"), "--attack-norm", "linf", "--attack-eps", "1/255"]
    code, err = run(capsys, *base, "--strong", "--strong-attacks", "apgd-ce,fab")
    assert_one_line_error(code, err, "--strong-attacks", "apgd-ce, apgd-t, square")
    code, err = run(capsys, *base, "--strong-attacks", "apgd-ce")
    assert_one_line_error(code, err, "need --strong")
    code, err = run(capsys, *base, "--strong", "--strong-schedule", "fast")
    assert_one_line_error(code, err, "invalid choice")
    assert not (tmp_path / "t.parquet").exists()


def test_missing_required_argument_is_one_line(capsys):
    code, err = run(capsys, "train", "--task", "synthetic")
    assert_one_line_error(code, err, "required")


def test_console_script_help_and_error_exit_code(tmp_path):
    exe = os.path.join(os.path.dirname(PY), "medgrid")
    for sub in ("prepare-data", "train", "evaluate", "aggregate"):
        res = subprocess.run([exe, sub, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage" in res.stdout
    res = subprocess.run([exe, "prepare-data", "--task", "bogus", "--out", str(tmp_path / "bogus.npz")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_interrupted_training_leaves_no_checkpoint(synth_dir, tmp_path):
    out = tmp_path / "m.pt"
    exe = os.path.join(os.path.dirname(PY), "medgrid")
    proc = subprocess.Popen([exe, "train", *train_args(synth_dir, out, epochs="50")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait until training is under way (first progress output), then interrupt
    proc.stdout.readline()
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
