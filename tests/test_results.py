"""The tidy table: schema validation, atomic writes, aggregation and its seed intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medgrid import results
from medgrid.errors import UserError
from medgrid.report import aggregate


def cell(seed=0, task="synthetic"):
    return results.cell_columns({"task": task, "size": 28, "arch": "cnn-small", "norm": "linf",
                                 "eps": 2 / 255, "seed": seed})


def table(seed=0, value=0.9, task="synthetic"):
    c = cell(seed, task)
    return results.from_rows([
        results.make_row(c, eval_kind="clean", metric="acc", value=value, n=100),
        results.make_row(c, eval_kind="pgd", eval_norm="linf", eval_eps=1 / 255, metric="acc", value=value / 2, n=100),
    ])


def test_roundtrip_keeps_schema(tmp_path):
    df = table()
    results.write_table(df, tmp_path / "t.parquet", csv=True)
    back = results.read_table(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert list(back.columns) == results.COLUMNS
    assert list(results.read_table(tmp_path / "t.csv").columns) == results.COLUMNS
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.drop(columns="metric"), "missing columns"),
    (lambda d: d.assign(extra=1), "unexpected columns"),
    (lambda d: d.assign(eval_kind="weird"), "unknown values"),
    (lambda d: d.assign(train_eps=-1.0), "negative epsilon"),
    (lambda d: d.assign(value=np.nan), "missing values"),
    (lambda d: d.assign(size="big"), "not int64"),
    (lambda d: pd.concat([d, d]), "duplicate"),
])
def test_validation_errors(mutate, message):
    with pytest.raises(UserError, match=message):
        results.validate(mutate(table()))


def test_unwritable_and_corrupt(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read"):
        results.read_table(bad)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write"):
        results.write_table(table(), blocker / "sub" / "t.parquet")


def test_aggregate_concatenates_and_intervals_match_hand_computation(tmp_path):
    values = [0.80, 0.86, 0.89]
    paths = []
    for seed, v in enumerate(values):
        paths.append(tmp_path / f"s{seed}.parquet")
        results.write_table(table(seed, v), paths[-1])
    df = aggregate.aggregate(paths, tmp_path / "summary.parquet", expected=3)
    assert len(df) == 6
    assert (tmp_path / "summary.csv").exists()
    seeds = pd.read_parquet(tmp_path / "summary_by_seed.parquet")
    row = seeds[(seeds.eval_kind == "clean")].iloc[0]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(sd)
    assert row["ci95_t_low"] == pytest.approx(mean - half) and row["ci95_t_high"] == pytest.approx(mean + half)


def test_aggregate_refuses_duplicates_and_missing(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    results.write_table(table(0), a)
    results.write_table(table(0), b)
    with pytest.raises(UserError, match="duplicate measurements.*a.parquet"):
        aggregate.aggregate([a, b], tmp_path / "s.parquet")
    with pytest.raises(UserError, match="missing cell tables.*nope"):
        aggregate.aggregate([a, tmp_path / "nope.parquet"], tmp_path / "s.parquet")
    with pytest.raises(UserError, match="expected 3"):
        aggregate.aggregate([a], tmp_path / "s.parquet", expected=3)
    assert not (tmp_path / "s.parquet").exists()


def test_a_table_written_before_construction_and_model_seed_reads_with_their_defaults(tmp_path):
    old = table(0).drop(columns=["construction", "model_seed"])  # as medgrid wrote it before issue 22
    path = tmp_path / "old.parquet"
    old.to_parquet(path, index=False)
    df = results.read_table(path)
    assert list(df.columns) == results.COLUMNS
    assert set(df.construction) == {"none"} and set(df.model_seed) == {0}
    # it aggregates beside a new table of another model of the same dataset
    new = table(0).assign(train_data="drand", model_seed=1)
    results.write_table(new, tmp_path / "new.parquet")
    old.assign(train_data="drand").to_parquet(tmp_path / "old_drand.parquet", index=False)
    out = aggregate.aggregate([tmp_path / "old_drand.parquet", tmp_path / "new.parquet"], tmp_path / "s.parquet")
    assert sorted(out.model_seed.unique()) == [0, 1]
    seeds = pd.read_parquet(tmp_path / "s_by_seed.parquet")
    assert (seeds.n_seeds == 2).all() and (seeds.n_grid_seeds == 1).all()  # two models of one dataset
    with pytest.raises(UserError, match="negative model_seed"):
        results.validate(table(0).assign(model_seed=-1))


def test_attack_setting_tokens_and_dataset_names():
    from medgrid import constructions

    assert constructions.ILYAS.token == "l2-0.5-100x0.1"
    assert constructions.token("l2", "0.50", "1/10", 100) == "l2-0.5-100x0.1"  # one token per value
    assert constructions.token("linf", "8/255", "1/255", 20) == "linf-8o255-20x1o255"
    for tok in ("l2-0.5-100x0.1", "linf-8o255-20x1o255", constructions.token("l2", 1e-5, 1e-6, 3)):
        assert constructions.parse(tok).token == tok
    assert constructions.split("drand") == ("drand", None) and constructions.split("original") == ("original", None)
    assert constructions.split("ddet-l2-0.50-10x0.1") == ("ddet", "l2-0.5-10x0.1")
    assert constructions.name("drand", "l2-0.5-10x0.1") == "drand-l2-0.5-10x0.1"
    assert constructions.name("drobust", "none") == "drobust"
    for bad in ("drobust-l2-0.5-10x0.1", "dtrain", "drand-l2", "drand-l3-0.5-10x0.1", "original-l2-0.5-10x0.1"):
        with pytest.raises(UserError):
            constructions.split(bad)
    with pytest.raises(UserError):
        constructions.token("l2", 0.5, 0.1, 0)
