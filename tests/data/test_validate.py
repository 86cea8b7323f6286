"""Validation: each error names file, line/row and column; lenient mode quarantines; duplicate rules."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pandas as pd
import pytest

from recvae.data import readers
from recvae.data.validate import DataValidationError, Validator, resolve_duplicates

HEADER = "userId,movieId,rating,timestamp\n"


def ml_csv(tmp_path, body):
    f = tmp_path / "ratings.csv"
    f.write_text(HEADER + body)
    return f


def error_of(fn, *args, **kwargs) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize(
    "body, line, column, reason",
    [
        ("1,2,4.0,10\n1,3,abc,11\n", 3, "rating", "non-numeric value 'abc'"),
        ("1,2,4.0,10\n1,3,NaN,11\n", 3, "rating", "NaN value"),
        ("1,2,4.0,10\n1,3,inf,11\n", 3, "rating", "infinite value"),
        ("1,2,4.0,10\n1,3,,11\n", 3, "rating", "missing value"),
        ("1,2,4.0,10\n-1,3,4.0,11\n", 3, "userId", "negative id '-1'"),
        ("1,2,4.0,10\n,3,4.0,11\n", 3, "userId", "missing value"),
        ("1,2,4.0,10\n2,x7,4.0,11\n", 3, "movieId", "non-numeric id 'x7'"),
        ("1,2,4.0,10\n1,3,4.0,yesterday\n", 3, "timestamp", "unparsable timestamp 'yesterday'"),
    ],
)
def test_bad_values_name_file_line_and_column(tmp_path, body, line, column, reason):
    err = error_of(readers.read_movielens, ml_csv(tmp_path, body))
    assert err.source.endswith("ratings.csv")
    assert (err.position, err.column) == (line, column)
    assert reason in str(err)
    assert re.match(rf".*ratings\.csv, line {line}, column '{column}': ", str(err))


def test_unparsable_line_is_named_with_its_text(tmp_path):
    err = error_of(readers.read_movielens, ml_csv(tmp_path, "1,2,4.0,10\n1,2,4.0\n3,4,5,6\n"))
    assert err.position == 3
    assert "wrong number of fields" in str(err) and "expected 4, got 3: 1,2,4.0" in str(err)


def test_double_colon_line_with_a_single_colon_is_unparsable(tmp_path):
    f = tmp_path / "ratings.dat"
    f.write_text("1::2::3::4\n1::2:3::4\n")
    err = error_of(readers.read_movielens, f)
    assert (err.position, str(err).count("wrong number of fields")) == (2, 1)


def test_missing_columns_are_listed(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("user,item\n1,2\n")
    err = error_of(readers.read_csv, f, user_col="user", item_col="item", rating_col="stars", time_col=None)
    assert err.column == "stars" and err.position == 1
    assert "missing column(s) 'stars' (found: user, item)" in str(err)


def test_parquet_errors_name_the_row(tmp_path):
    f = tmp_path / "r.parquet"
    pd.DataFrame({"user": [1.0, 2.5, 3.0], "item": [1, 2, 3]}).to_parquet(f)
    err = error_of(readers.read_parquet, f, rating_col=None, time_col=None)
    assert (err.unit, err.position, err.column) == ("row", 2, "user")
    assert "non-integer id" in str(err)
    g = tmp_path / "s.parquet"
    pd.DataFrame({"user": ["a", ""], "item": ["x", "y"]}).to_parquet(g)
    err = error_of(readers.read_parquet, g, rating_col=None, time_col=None)
    assert (err.position, err.column) == (2, "user") and "missing value" in str(err)


def test_sql_errors_name_the_result_row(tmp_path):
    db = tmp_path / "r.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE r (u INTEGER, i INTEGER, s)")
    con.executemany("INSERT INTO r VALUES (?, ?, ?)", [(1, 1, 4.0), (2, 2, "five"), (3, None, 3.0)])
    con.commit()
    con.close()
    v = Validator("db", lenient=True, unit="row")
    df = readers.read_sql(f"sqlite:///{db}", "r", user_col="u", item_col="i", rating_col="s", time_col=None,
                          validator=v)
    issues = v.issues()
    assert df["user"].tolist() == [1]
    expected = [[2, "s", "non-numeric value"], [3, "i", "missing value"]]
    assert issues[["row", "column", "reason"]].values.tolist() == expected


def test_strict_mode_reports_the_earliest_problem_and_how_many_more(tmp_path):
    err = error_of(readers.read_movielens, ml_csv(tmp_path, "1,2,4.0,10\n1,3,4.0,x\n-5,3,4.0,11\n1,4,bad,12\n"))
    assert err.position == 3
    assert "2 more problem(s)" in str(err)


def test_lenient_mode_drops_counts_and_quarantines(tmp_path):
    f = ml_csv(tmp_path, "1,2,4.0,10\n1,3,abc,11\n1,4\n-2,5,3.0,12\n2,6,5.0,13\n")
    v = Validator(f, lenient=True)
    df = readers.read_movielens(f, v)
    assert df["item"].tolist() == [2, 6]
    assert list(df.index) == [2, 6]  # original line numbers survive
    report = v.finish(len(df), tmp_path / "q.csv")
    assert report.n_dropped == 3 and report.n_rows == 2
    assert report.by_reason == {"non-numeric value": 1, "wrong number of fields": 1, "negative id": 1}
    q = pd.read_csv(tmp_path / "q.csv")
    assert q["line"].tolist() == [3, 4, 5]
    assert q["reason"].tolist() == ["non-numeric value", "wrong number of fields", "negative id"]
    assert q["value"].tolist()[0] == "abc"
    assert q["file"].str.endswith("ratings.csv").all()


def test_quarantine_as_parquet(tmp_path):
    f = ml_csv(tmp_path, "1,2,4.0,10\n1,3,NaN,11\n")
    v = Validator(f, lenient=True)
    readers.read_movielens(f, v)
    report = v.finish(1, tmp_path / "q.parquet")
    q = pd.read_parquet(report.quarantine)
    assert q[["line", "column", "reason"]].values.tolist() == [[3, "rating", "NaN value"]]


def test_clean_file_reports_nothing(tmp_path):
    f = ml_csv(tmp_path, "1,2,4.0,10\n")
    v = Validator(f, lenient=True)
    readers.read_movielens(f, v)
    report = v.finish(1, tmp_path / "q.csv")
    assert report.n_dropped == 0 and report.by_reason == {} and report.quarantine is None
    assert not (tmp_path / "q.csv").exists()


# --- duplicates ------------------------------------------------------------------------------------


def frame(rows):
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    df.index = pd.RangeIndex(2, 2 + len(df), name="line")
    return df


def test_duplicates_max_keeps_highest_rating_and_latest_time_at_first_position():
    df = frame([[1, 1, 2.0, 50], [1, 2, 3.0, 10], [1, 1, 5.0, 20], [1, 1, 4.0, 90]])
    out, n = resolve_duplicates(df, "max")
    assert n == 2
    assert out.values.tolist() == [[1, 1, 5.0, 90], [1, 2, 3.0, 10]]
    assert list(out.index) == [2, 3]
    assert df["rating"].tolist() == [2.0, 3.0, 5.0, 4.0]  # input untouched


def test_duplicates_first_keeps_the_first_occurrence():
    out, n = resolve_duplicates(frame([[1, 1, 2.0, 50], [1, 1, 5.0, 20], [2, 1, 1.0, 1]]), "first")
    assert n == 1 and out.values.tolist() == [[1, 1, 2.0, 50], [2, 1, 1.0, 1]]


def test_duplicates_error_names_both_lines():
    rows = [[1, 1, 2.0, 50], [2, 2, 1.0, 1], [1, 1, 5.0, 20]]
    err = error_of(resolve_duplicates, frame(rows), "error", source="f.csv")
    assert err.position == 4 and "first at line 2" in str(err) and str(err).startswith("f.csv, line 4")


def test_duplicates_with_string_ids_and_no_duplicates():
    df = frame([["a", "x", 1.0, 1], ["a", "y", 1.0, 2], ["b", "x", 1.0, 3]])
    out, n = resolve_duplicates(df, "error")
    assert n == 0 and out is df
    out, n = resolve_duplicates(frame([["a", "x", 1.0, 1], ["a", "x", 3.0, 2]]), "max")
    assert n == 1 and out["rating"].tolist() == [3.0]


def test_duplicates_unknown_rule():
    with pytest.raises(ValueError, match="duplicates rule"):
        resolve_duplicates(frame([[1, 1, 1.0, 1]]), "last")


def test_validator_flags_accumulate_in_file_order():
    v = Validator("src", lenient=True)
    v.start_file("b.csv")
    v.flag(np.array([5]), "late")
    v.start_file("a.csv")
    v.flag(np.array([1]), "early")
    assert v.issues()["file"].tolist() == ["b.csv", "a.csv"]
    strict = Validator("src")
    strict.start_file("b.csv")
    strict.flag([7, 3], "bad", column="c")
    err = error_of(strict.finish, 0)
    assert (err.source, err.position) == ("b.csv", 3)


def test_empty_file_and_header_only(tmp_path):
    from recvae.config import DataConfig
    from recvae.data.preprocess import preprocess

    (tmp_path / "u.data").write_text("")
    assert str(error_of(readers.read_movielens, tmp_path / "u.data")).endswith("u.data: empty file")
    df = readers.read_movielens(ml_csv(tmp_path, ""))
    assert len(df) == 0
    assert "has no data rows" in str(error_of(preprocess, df, DataConfig(), source="ratings.csv"))


def test_wrong_encoding_is_named_and_encoding_option_reads_it(tmp_path):
    f = tmp_path / "x.csv"
    f.write_bytes("user,item\nété,1\nb,2\n".encode("latin-1"))
    err = error_of(readers.read_csv, f, rating_col=None, time_col=None)
    assert err.column == "user" and "not valid UTF-8" in str(err)
    df = readers.read_csv(f, rating_col=None, time_col=None, encoding="latin-1")
    assert df["user"].tolist() == ["été", "b"]
