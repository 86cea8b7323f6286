"""Streamed reads of Parquet datasets and SQL results: batch by batch, the same interactions and the same snapshot as
one whole read, duplicates across batches resolved by the same rules, row numbers counted over the whole source."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from recvae.config import Config, apply_overrides
from recvae.data import readers, synthetic
from recvae.data.prepare import prepare
from recvae.data.preprocess import preprocess
from recvae.data.readers import Source, batches
from recvae.data.validate import DataValidationError, Validator


@pytest.fixture
def count_batches(monkeypatch):
    """How many batches each read checked (a spy on the per-batch check)."""
    seen: list[int] = []
    real = batches.build_interactions

    def spy(cols, *args, **kwargs):
        seen.append(len(cols["user"]))
        return real(cols, *args, **kwargs)

    monkeypatch.setattr(batches, "build_interactions", spy)
    return seen


def interactions(n_users: int = 120, seed: int = 3) -> pd.DataFrame:
    """Synthetic interactions with a day column, some (user, item) pairs repeated on a later day."""
    df = synthetic.generate("small", n_users=n_users, n_items=80, seed=seed)
    repeats = df.sample(frac=0.05, random_state=seed).assign(rating=lambda d: 6.0 - d["rating"])
    df = pd.concat([df, repeats], ignore_index=True)
    days = pd.to_datetime(df["timestamp"], unit="s").dt.strftime("%Y-%m")
    return df.assign(day=days).sort_values("day", kind="stable").reset_index(drop=True)


def partitioned(df: pd.DataFrame, folder) -> None:
    """One hive partition per day (day=YYYY-MM/part.parquet), rows in the frame's order."""
    for day, part in df.groupby("day", sort=True):
        (folder / f"day={day}").mkdir(parents=True)
        part.drop(columns="day").to_parquet(folder / f"day={day}" / "part.parquet", index=False)


def assert_same_snapshot(a, b) -> None:
    assert a.snapshot_id == b.snapshot_id
    assert a.users == b.users and a.items == b.items
    assert set(a.matrices) == set(b.matrices)
    for part, m in a.matrices.items():
        assert (m != b.matrices[part]).nnz == 0, part
        assert np.array_equal(a.rows[part], b.rows[part]), part


@pytest.mark.parametrize("rule", ["max", "first"])
def test_partitioned_folder_gives_the_snapshot_of_the_single_file(tmp_path, rule, count_batches):
    df = interactions()
    single = tmp_path / "all.parquet"
    df.drop(columns="day").to_parquet(single, index=False)
    partitioned(df, tmp_path / "by_day")
    config = apply_overrides(Config(), [f"data.duplicates={rule}"])

    whole = prepare(Source(format="parquet", path=str(single)), tmp_path / "s1", config)
    n_whole = len(count_batches)
    streamed = prepare(Source(path=str(tmp_path / "by_day"), batch_rows=97), tmp_path / "s2", config)
    assert len(count_batches) - n_whole > len(df) // 97  # many small batches, several per partition
    assert_same_snapshot(whole, streamed)
    assert whole.manifest["preprocess"]["duplicates_removed"] > 0  # repeats sit in other partitions than firsts
    assert streamed.manifest["preprocess"] == whole.manifest["preprocess"]


def test_string_ids_and_timestamps_are_read_as_one_read(tmp_path):
    df = interactions(60).drop(columns="day")
    df["user"] = "u-" + df["user"].astype(str)
    df["item"] = "item/" + df["item"].astype(str)
    f = tmp_path / "r.parquet"
    df.to_parquet(f, index=False)
    whole = readers.read_parquet(f, batch_rows=10**9)
    small = readers.read_parquet(f, batch_rows=13)
    pd.testing.assert_frame_equal(whole, small)
    assert small["user"].iloc[0].startswith("u-") and small.index[0] == 1 and small.index[-1] == len(df)


def test_text_ids_that_look_like_integers_until_a_later_batch(tmp_path, count_batches):
    """id_type auto: integers while every value seen is an integer literal; text in batch 3 makes the whole
    column text, as a whole read would ("007" stays "007")."""
    users = ["007", "8", "9", "10", "11", "12", "abc", "13"]
    df = pd.DataFrame({"user": users, "item": [str(i) for i in range(8)], "rating": 4.0})
    f = tmp_path / "r.parquet"
    df.to_parquet(f, index=False)
    small = readers.read_parquet(f, batch_rows=3)
    pd.testing.assert_frame_equal(small, readers.read_parquet(f))
    assert small["user"].tolist() == users
    assert small["item"].tolist() == list(range(8))  # the other column stays integer
    assert len(count_batches) == 3 + 3 + 1  # read again once after the third batch


def test_bad_rows_are_named_by_their_row_in_the_whole_dataset(tmp_path):
    df = pd.DataFrame({"user": [1, 2, 3, 4, 5, 6, 7], "item": [1, 2, 3, 4, 5, 6, 7],
                       "rating": [4.0, 4.0, 4.0, 4.0, np.nan, 4.0, np.inf]})
    f = tmp_path / "r.parquet"
    df.to_parquet(f, index=False)
    with pytest.raises(DataValidationError, match=r"row 5, column 'rating': missing value \(1 more problem"):
        readers.read_parquet(f, batch_rows=2)
    lenient = Validator(f, lenient=True, unit="row")
    kept = readers.read_parquet(f, batch_rows=2, validator=lenient)
    assert kept.index.tolist() == [1, 2, 3, 4, 6]
    assert lenient.finish(len(kept)).n_dropped == 2


def test_duplicates_in_different_batches_follow_the_rules(tmp_path):
    df = pd.DataFrame({"user": [1, 2, 3, 1], "item": [1, 1, 1, 1], "rating": [2.0, 4.0, 4.0, 5.0]})
    folder = tmp_path / "d"
    for k, part in enumerate((df.iloc[:2], df.iloc[2:])):
        (folder / f"part={k}").mkdir(parents=True)
        part.to_parquet(folder / f"part={k}" / "p.parquet", index=False)
    frame = readers.read(Source(format="parquet", path=str(folder), batch_rows=1))
    cfg = Config()
    cfg.data.min_user_count = 0
    for rule, kept in (("max", [5.0]), ("first", [])):  # first: user 1's 2.0 is kept, then binarized away
        cfg.data.duplicates = rule
        out, stats = preprocess(frame, cfg.data)
        assert stats["duplicates_removed"] == 1
        assert out.loc[out["user"] == 1, "rating"].tolist() == kept
    cfg.data.duplicates = "error"
    with pytest.raises(DataValidationError, match=r"row 4: duplicate \(user, item\) pair .*, first at row 1"):
        preprocess(frame, cfg.data, source=str(folder))


def test_folder_of_parquet_files_is_guessed(tmp_path):
    (tmp_path / "d" / "day=2024-01-01").mkdir(parents=True)
    pd.DataFrame({"user": [1], "item": [1]}).to_parquet(tmp_path / "d" / "day=2024-01-01" / "part.parquet")
    assert readers.guess_format(tmp_path / "d") == "parquet"
    with pytest.raises(ValueError, match="batch_rows"):
        Source(format="parquet", path="x", batch_rows=0)


def test_sql_result_is_fetched_in_batches(db_url, count_batches):
    """SQLite and PostgreSQL (a server-side cursor there): batch by batch, the frame of one whole read."""
    import sqlalchemy as sa

    df = interactions(40).drop(columns="day")
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        df.rename(columns={"user": "user_id"}).to_sql("ratings", conn, index=False)
    engine.dispose()
    kw = {"user_col": "user_id", "item_col": "item", "rating_col": "rating", "time_col": "timestamp"}
    small = readers.read_sql(db_url, "ratings", batch_rows=50, **kw)
    assert len(count_batches) == -(-len(df) // 50)
    whole = readers.read_sql(db_url, "ratings", batch_rows=10**9, **kw)
    pd.testing.assert_frame_equal(small, whole)
    assert small["user"].tolist() == df["user"].tolist() and small.index[-1] == len(df)
    with pytest.raises(DataValidationError, match=r"query failed"):
        readers.read_sql(db_url, "SELECT nope FROM ratings", batch_rows=50, **kw)


def test_sql_prepare_with_small_batches_matches_parquet(tmp_path):
    df = interactions(80).drop(columns="day")
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as con:
        df.to_sql("ratings", con, index=False)
    f = tmp_path / "r.parquet"
    df.to_parquet(f, index=False)
    via_sql = prepare(Source(format="sql", path=f"sqlite:///{db}", query="ratings", batch_rows=33), tmp_path / "a")
    via_file = prepare(Source(format="parquet", path=str(f)), tmp_path / "b")
    assert_same_snapshot(via_sql, via_file)
