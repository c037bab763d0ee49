"""Config checks JSON Schema cannot make readable or state (medgrid.config), and their place in the workflow."""

from pathlib import Path

import yaml

from medgrid.config import unknown_keys, warmup_errors

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_shipped_configs_have_no_unknown_key():
    names = sorted(p.name for p in (REPO / "config").glob("*.yaml"))
    assert {"config.yaml", "demo.yaml", "local-data.yaml", "features-sweep.yaml"} <= set(names)
    for name in names:
        assert unknown_keys(yaml.safe_load((REPO / "config" / name).read_text()), SCHEMA) == [], name


def test_misspelled_keys_are_named_with_the_closest_valid_one():
    bad = {"taskz": ["synthetic"], "evaluate": {"strong": {"iteratons": 5}}, "resources": {"train": {"treads": 2}},
           "hparams": {"cnn-small": {"lrr": 0.1, "adversarial": {"epoch": 3}}}}
    lines = unknown_keys(bad, SCHEMA)
    assert "config: unknown key taskz (did you mean tasks?)" in lines
    assert "config: unknown key evaluate.strong.iteratons (did you mean iterations?)" in lines
    assert "config: unknown key resources.train.treads (did you mean threads?)" in lines
    assert "config: unknown key hparams.cnn-small.lrr (did you mean lr?)" in lines
    assert "config: unknown key hparams.cnn-small.adversarial.epoch (did you mean epochs?)" in lines
    assert len(lines) == 5 and all(len(line) < 200 for line in lines)


def test_warmup_must_leave_epochs():
    assert warmup_errors(DEFAULT["hparams"]) == []
    hp = {"cnn-small": {"epochs": 40, "eps_warmup_epochs": 5, "adversarial": {"epochs": 5}}}
    (line,) = warmup_errors(hp)
    assert "hparams.cnn-small" in line and "(5)" in line
    assert warmup_errors({"cnn-small": {"epochs": 6, "eps_warmup_epochs": 5}}) == []
