"""Readers: every source format gives the interactions contract (or a Snapshot for already-split formats)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recvae.data import readers
from recvae.data.readers import Source
from recvae.data.validate import DataValidationError, Validator


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def check_contract(df, with_time=True):
    assert list(df.columns[:3]) == ["user", "item", "rating"]
    assert df["rating"].dtype == np.float64
    assert ("timestamp" in df.columns) == with_time
    if with_time:
        assert df["timestamp"].dtype == np.int64


def test_movielens_u_data_tab_separated(tmp_path):
    f = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    df = readers.read_movielens(f)
    check_contract(df)
    assert df["user"].tolist() == [196, 186, 22]
    assert df["item"].tolist() == [242, 302, 377]
    assert df["rating"].tolist() == [3.0, 3.0, 1.0]
    assert df["timestamp"].iloc[0] == 881250949
    assert df["user"].dtype == np.int64
    assert list(df.index) == [1, 2, 3]  # line numbers


def test_movielens_ratings_dat_double_colon(tmp_path):
    f = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
    df = readers.read_movielens(f)
    check_contract(df)
    assert df[["user", "item"]].values.tolist() == [[1, 1193], [1, 661], [2, 1357]]
    assert df["rating"].tolist() == [5.0, 3.0, 5.0]


def test_movielens_ratings_csv_with_header_and_half_stars(tmp_path):
    f = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n")
    df = readers.read_movielens(f)
    check_contract(df)
    assert df["rating"].tolist() == [5.0, 3.5]
    assert list(df.index) == [2, 3]  # the header is line 1


def test_movielens_folder_finds_the_ratings_file(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.0,10\n")
    assert len(readers.read_movielens(tmp_path)) == 1
    assert Source.from_path(tmp_path).format == "movielens"


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    f = write(tmp_path / "u.data", "1\t2\t3\t10\n\n4\t5\t4\t11\n\n")
    df = readers.read_movielens(f)
    assert df["user"].tolist() == [1, 4]
    assert list(df.index) == [1, 3]


def test_csv_with_custom_columns_string_ids_and_iso_timestamps(tmp_path):
    f = write(
        tmp_path / "events.csv",
        "who,what,score,when,extra\nalice,B0001,4.5,2020-01-01T00:00:00Z,x\nbob,\"B,2\",2,1600000000,y\n",
    )
    df = readers.read_csv(f, user_col="who", item_col="what", rating_col="score", time_col="when")
    check_contract(df)
    assert df["user"].tolist() == ["alice", "bob"]
    assert df["item"].tolist() == ["B0001", "B,2"]  # quoted separator inside a field
    assert df["timestamp"].tolist() == [1577836800, 1600000000]


def test_csv_implicit_without_rating_or_time(tmp_path):
    f = write(tmp_path / "clicks.tsv", "u\ti\n1\t10\n2\t20\n")
    src = Source.from_path(f, user_col="u", item_col="i", rating_col=None, time_col=None, implicit=True)
    assert src.format == "csv" and src.sep == "\t"
    df = readers.read(src)
    check_contract(df, with_time=False)
    assert df["rating"].tolist() == [1.0, 1.0]
    assert df["user"].dtype == np.int64  # auto: all integers


def test_csv_id_type_str_keeps_leading_zeros(tmp_path):
    f = write(tmp_path / "x.csv", "user,item\n007,01\n7,1\n")
    df = readers.read_csv(f, rating_col=None, time_col=None, id_type="str")
    assert df["user"].tolist() == ["007", "7"]
    assert df["item"].tolist() == ["01", "1"]


def test_parquet_reader_with_named_columns(tmp_path):
    f = tmp_path / "r.parquet"
    pd.DataFrame({"uid": np.array([3, 1], np.int32), "iid": [7, 8], "r": [4.0, 2.0], "ts": [5, 6]}).to_parquet(f)
    df = readers.read_parquet(f, user_col="uid", item_col="iid", rating_col="r", time_col="ts")
    check_contract(df)
    assert df["user"].dtype == np.int64
    assert df[["user", "item"]].values.tolist() == [[3, 7], [1, 8]]
    assert df.index.name == "row" and list(df.index) == [1, 2]


def test_parquet_timestamp_column_becomes_seconds(tmp_path):
    f = tmp_path / "r.parquet"
    ts = pd.to_datetime(["2020-01-01 00:00:01", "2021-06-01 00:00:00"]).as_unit("ms")
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, 2.0], "timestamp": ts}).to_parquet(f)
    df = readers.read_parquet(f)
    assert df["timestamp"].tolist() == [1577836801, 1622505600]


def _sqlite(path, rows, create="CREATE TABLE ratings (user_id INTEGER, movie TEXT, stars REAL, ts INTEGER)"):
    con = sqlite3.connect(path)
    con.execute(create)
    con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_sql_table_and_query_through_sqlalchemy(tmp_path):
    db = tmp_path / "r.db"
    _sqlite(db, [(1, "m1", 4.0, 100), (2, "m2", 3.0, 200), (1, "m3", 5.0, 300)])
    url = f"sqlite:///{db}"
    kw = dict(user_col="user_id", item_col="movie", rating_col="stars", time_col="ts")
    df = readers.read_sql(url, "ratings", **kw)
    check_contract(df)
    assert df["item"].tolist() == ["m1", "m2", "m3"]
    q = readers.read_sql(url, "SELECT * FROM ratings WHERE stars > 3.5 ORDER BY ts", **kw)
    assert q["item"].tolist() == ["m1", "m3"]
    assert readers.table_query("ratings") == 'SELECT * FROM "ratings"'


def test_sql_errors_name_the_query(tmp_path):
    db = tmp_path / "r.db"
    _sqlite(db, [(1, "m1", 4.0, 100)])
    with pytest.raises(DataValidationError, match="query failed"):
        readers.read_sql(f"sqlite:///{db}", "nosuchtable", user_col="user_id", item_col="movie")
    with pytest.raises(DataValidationError, match="missing column"):
        readers.read_sql(f"sqlite:///{db}", "ratings", user_col="userId", item_col="movie", rating_col=None,
                         time_col=None)


def _pro_sg(folder, parts, sids=(10, 20, 30), uids=(101, 102, 103, 104)):
    folder.mkdir()
    for name in readers.PRO_SG_PARTS:
        lines = ["uid,sid"] + [f"{u},{s}" for u, s in parts.get(name, [])]
        write(folder / f"{name}.csv", "\n".join(lines) + "\n")
    write(folder / "unique_sid.txt", "\n".join(map(str, sids)) + "\n")
    write(folder / "unique_uid.txt", "\n".join(map(str, uids)) + "\n")
    return folder


def test_pro_sg_becomes_a_snapshot_with_original_ids(tmp_path):
    parts = {
        "train": [(0, 0), (0, 1), (1, 2)],
        "validation_tr": [(2, 0), (2, 1)],
        "validation_te": [(2, 2)],
        "test_tr": [(3, 1)],
        "test_te": [(3, 0)],
    }
    snap = readers.read_pro_sg(_pro_sg(tmp_path / "pro_sg", parts))
    assert snap.items.raw_ids.tolist() == [10, 20, 30]  # sid order -> original movie ids
    assert snap.users.raw_ids.tolist() == [101, 102, 103, 104]
    assert snap.train.toarray().tolist() == [[1, 1, 0], [0, 0, 1]]
    tr, te = snap.heldout("validation")
    assert tr.toarray().tolist() == [[1, 1, 0]] and te.toarray().tolist() == [[0, 0, 1]]
    assert snap.users.to_raw(snap.rows["test_te"]).tolist() == [104]
    assert snap.manifest["protocol"] == "strong"


def test_pro_sg_sid_out_of_range_is_named(tmp_path):
    folder = _pro_sg(tmp_path / "pro_sg", {"train": [(0, 0), (0, 5)], "validation_tr": [(1, 0)],
                                            "validation_te": [(1, 1)], "test_tr": [(2, 0)], "test_te": [(2, 1)]})
    with pytest.raises(DataValidationError, match=r"train\.csv, line 3, column 'sid': sid out of range"):
        readers.read_pro_sg(folder)


def test_lightgcn_becomes_a_snapshot_without_validation(tmp_path):
    d = tmp_path / "gowalla"
    d.mkdir()
    write(d / "train.txt", "0 0 1 2\n1 2 3\n2 1\n")
    write(d / "test.txt", "0 3\n1 0 4\n2\n")  # user 2 has no test items; item 4 is only in test
    snap = readers.read_lightgcn(d)
    assert snap.n_items == 5 and len(snap.users) == 3
    assert snap.train.nnz == 6
    assert not snap.has("validation")
    tr, te = snap.heldout("test")
    assert snap.rows["test_te"].tolist() == [0, 1]
    assert (tr != snap.train[[0, 1]]).nnz == 0  # fold-in = the same users' train items
    assert te.toarray().tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 1]]
    assert snap.manifest["protocol"] == "lightgcn"


def test_lightgcn_bad_token_names_line_and_field(tmp_path):
    d = tmp_path / "lg"
    d.mkdir()
    write(d / "train.txt", "0 0 1\n1 2 x3\n")
    write(d / "test.txt", "0 1\n")
    message = r"train\.txt, line 2, column 'field 3 \(item\)': non-numeric id 'x3'"
    with pytest.raises(DataValidationError, match=message):
        readers.read_lightgcn(d)


def test_guess_format(tmp_path):
    write(tmp_path / "u.data", "1\t2\t3\t4\n")
    write(tmp_path / "ratings.dat", "1::2::3::4\n")
    write(tmp_path / "other.csv", "a,b\n1,2\n")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")
    assert readers.guess_format(tmp_path / "u.data") == "movielens"
    assert readers.guess_format(tmp_path / "ratings.dat") == "movielens"
    assert readers.guess_format(tmp_path / "other.csv") == "csv"
    assert readers.guess_format(tmp_path / "x.parquet") == "parquet"


def test_fingerprint_changes_with_content_and_sql_rows(tmp_path):
    f = write(tmp_path / "u.data", "1\t2\t3\t4\n")
    src = Source.from_path(f)
    a = readers.fingerprint(src)
    assert a == readers.fingerprint(src)
    write(f, "1\t2\t4\t4\n")
    assert readers.fingerprint(src)["sha256"] != a["sha256"]
    sql = Source(format="sql", path="sqlite:///x.db", query="ratings")
    assert readers.fingerprint(sql, 10)["sha256"] != readers.fingerprint(sql, 11)["sha256"]
    assert "password" not in str(Source(format="sql", path="postgresql://u:password@h/db", query="t").describe())


def test_source_shows_a_sql_url_without_its_password_and_counts_rows_or_lines():
    sql = Source(format="sql", path="postgresql://u:password@h/db", query="t")
    assert "password" not in sql.shown_path and sql.shown_path.startswith("postgresql://u:")
    assert Source(format="csv", path="x.csv").shown_path == "x.csv"
    assert [Source(format=f).position_unit for f in ("csv", "movielens", "parquet", "sql", "synthetic")] == [
        "line", "line", "row", "row", "row"]


def test_package_exports_what_callers_import():
    """The readers package keeps the names of the former readers.py module, for other layers and scripts."""
    from recvae.data import validate

    for name in readers.__all__:
        assert getattr(readers, name) is not None, name
    for name in validate.__all__:
        assert getattr(validate, name) is not None, name
    assert readers.DataValidationError is validate.DataValidationError
    assert readers.PRO_SG_PARTS == ("train", "validation_tr", "validation_te", "test_tr", "test_te")


# --- the real files ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ml100k(data_home):
    df = readers.read_movielens(data_home / "ml-100k" / "u.data")
    assert (len(df), df["user"].nunique(), df["item"].nunique()) == (100_000, 943, 1_682)
    assert set(df["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.realdata
def test_real_ml_latest_small(data_home):
    df = readers.read_movielens(data_home / "ml-latest-small" / "ratings.csv")
    assert (len(df), df["user"].nunique(), df["item"].nunique()) == (100_836, 610, 9_724)
    assert df["rating"].min() == 0.5 and df["timestamp"].min() == 828124615


@pytest.mark.realdata
def test_real_ml1m_implicit_parquet(data_home):
    df = readers.read_parquet(data_home / "ml-1m" / "ratings_implicit.parquet", user_col="userId",
                              item_col="movieId", rating_col=None, time_col=None)
    assert (len(df), df["user"].nunique(), df["item"].nunique()) == (1_000_209, 6_040, 3_706)
    assert (df["rating"] == 1.0).all()


@pytest.mark.realdata
def test_real_pro_sg(data_home):
    snap = readers.read_pro_sg(data_home / "ml-1m" / "pro_sg")
    counts = {k: v["interactions"] for k, v in snap.summary().items()}
    assert counts == {"train": 383_420, "validation_tr": 77_568, "validation_te": 18_900,
                      "test_tr": 76_634, "test_te": 18_652}
    assert sum(counts.values()) == 575_174
    assert (len(snap.users), snap.n_items) == (6_034, 3_459)
    assert snap.train.shape[0] == 4_034
    assert snap.matrices["validation_tr"].shape[0] == snap.matrices["test_tr"].shape[0] == 1_000
    assert snap.items.raw_ids[0] == 1193  # first line of unique_sid.txt


@pytest.mark.realdata
def test_real_gowalla(data_home):
    snap = readers.read_lightgcn(data_home / "gowalla-lightgcn")
    assert (len(snap.users), snap.n_items) == (29_858, 40_981)
    assert snap.train.nnz == 810_128 and snap.matrices["test_te"].nnz == 217_242


def test_default_timestamp_column_is_optional_but_a_named_one_is_not(tmp_path):
    f = write(tmp_path / "r.csv", "user,item,rating\n1,2,4.0\n")
    df = readers.read_csv(f)
    assert list(df.columns) == ["user", "item", "rating"]
    with pytest.raises(DataValidationError, match="missing column.*'when'"):
        readers.read_csv(f, time_col="when")


# --- ids beyond int64 (issue #13): never wrapped; text ids in auto mode, an error naming the place in int mode ---

BIG = [str(2**63), str(2**70), str(2**70 + 1)]  # 2**70 and 2**70 + 1 are one float64: they must stay two users


def test_csv_ids_beyond_int64_stay_distinct_text_ids_in_auto_mode(tmp_path):
    f = write(tmp_path / "big.csv", "user,item\n" + "".join(f"{u},{i}\n" for i, u in enumerate(["5", *BIG])))
    df = readers.read_csv(f, rating_col=None, time_col=None)
    assert df["user"].tolist() == ["5", *BIG]
    assert df["item"].tolist() == [0, 1, 2, 3]  # the other column keeps integer ids
    assert readers.read_csv(f, rating_col=None, time_col=None, id_type="str")["user"].tolist() == ["5", *BIG]


def test_csv_ids_beyond_int64_are_refused_in_int_mode(tmp_path):
    f = write(tmp_path / "big.csv", "user,item\n5,1\n6,2\n" + f"{BIG[1]},3\n")
    with pytest.raises(DataValidationError) as info:
        readers.read_csv(f, rating_col=None, time_col=None, id_type="int")
    err = info.value
    assert (err.source, err.position, err.column) == (str(f), 4, "user")
    assert "beyond the int64 range" in str(err) and BIG[1] in str(err)


def test_csv_ids_that_a_float_cannot_hold_are_read_exactly(tmp_path):
    # 2**53 + 1 is not a float64; with a decimal in the column pyarrow would read every id as a float
    f = write(tmp_path / "f.csv", "user,item\n9007199254740993,1\n9007199254740992,2\n" + f"{BIG[0]},3\n")
    df = readers.read_csv(f, rating_col=None, time_col=None)
    assert df["user"].tolist() == ["9007199254740993", "9007199254740992", BIG[0]]


def test_csv_float_formatted_ids_still_read_as_integers(tmp_path):
    f = write(tmp_path / "f.csv", "user,item\n1.0,2\n3.0,4\n")
    assert readers.read_csv(f, rating_col=None, time_col=None)["user"].tolist() == [1, 3]


def test_movielens_id_beyond_int64_is_named(tmp_path):
    f = write(tmp_path / "u.data", f"1\t2\t3\t4\n{BIG[0]}\t2\t3\t4\n")
    with pytest.raises(DataValidationError, match=r"u\.data, line 2, column 'user id': id beyond the int64 range"):
        readers.read_movielens(f)


@pytest.mark.parametrize(
    "column, as_text",
    [
        (pa.array([2**63, 2**64 - 1, 5], pa.uint64()), [str(2**63), str(2**64 - 1), "5"]),
        (pa.array([2.0**70, 2.0**71, 5.0]), [str(2**70), str(2**71), "5"]),
        (pa.array([Decimal(2**70), Decimal(2**70 + 1), Decimal(5)], pa.decimal128(30, 0)), [BIG[1], BIG[2], "5"]),
    ],
    ids=["uint64", "float64", "decimal"],
)
def test_parquet_ids_beyond_int64(tmp_path, column, as_text):
    f = tmp_path / "r.parquet"
    pq.write_table(pa.table({"user": column, "item": pa.array([1, 2, 3])}), f)
    assert readers.read_parquet(f, rating_col=None, time_col=None)["user"].tolist() == as_text
    assert readers.read_parquet(f, rating_col=None, time_col=None, id_type="str")["user"].tolist() == as_text
    with pytest.raises(DataValidationError) as info:
        readers.read_parquet(f, rating_col=None, time_col=None, id_type="int")
    assert (info.value.unit, info.value.position, info.value.column) == ("row", 1, "user")
    assert "beyond the int64 range" in str(info.value)


def test_parquet_decimal_ids_are_exact_within_int64(tmp_path):
    f = tmp_path / "r.parquet"
    ids = [Decimal(2**53), Decimal(2**53 + 1), Decimal(2**63 - 1)]  # one float64 for the first two
    pq.write_table(pa.table({"user": pa.array(ids, pa.decimal128(20, 0)), "item": pa.array([1, 2, 3])}), f)
    df = readers.read_parquet(f, rating_col=None, time_col=None)
    assert df["user"].tolist() == [2**53, 2**53 + 1, 2**63 - 1] and df["user"].dtype == np.int64


def test_sql_ids_beyond_int64(tmp_path):
    db = tmp_path / "r.db"
    _sqlite(db, [(BIG[1], "m1", 4.0, 1), (BIG[2], "m2", 4.0, 2), (5, "m3", 4.0, 3)],
            create="CREATE TABLE ratings (user_id, movie TEXT, stars REAL, ts INTEGER)")
    kw = dict(user_col="user_id", item_col="movie", rating_col="stars", time_col="ts")
    assert readers.read_sql(f"sqlite:///{db}", "ratings", **kw)["user"].tolist() == [BIG[1], BIG[2], "5"]
    with pytest.raises(DataValidationError) as info:
        readers.read_sql(f"sqlite:///{db}", "ratings", id_type="int", **kw)
    assert (info.value.position, info.value.column) == (1, "user_id") and "beyond the int64 range" in str(info.value)


def test_lightgcn_and_pro_sg_ids_beyond_int64(tmp_path):
    d = tmp_path / "lg"
    d.mkdir()
    write(d / "train.txt", f"0 0 1\n1 2 {BIG[0]}\n")
    write(d / "test.txt", "0 1\n")
    with pytest.raises(DataValidationError, match=r"train\.txt, line 2, column 'field 3 \(item\)': id beyond the int"):
        readers.read_lightgcn(d)
    parts = {"train": [(0, 0), (1, 1)], "validation_tr": [(2, 0)], "validation_te": [(2, 1)],
             "test_tr": [(3, 0)], "test_te": [(3, 1)]}
    snap = readers.read_pro_sg(_pro_sg(tmp_path / "p", parts, sids=(BIG[1], BIG[2])))
    assert snap.items.raw_ids.tolist() == [BIG[1], BIG[2]]


def test_header_only_csv_reads_as_no_rows(tmp_path):
    from recvae.config import DataConfig
    from recvae.data.preprocess import preprocess

    f = write(tmp_path / "h.csv", "user,item,rating,timestamp\n")
    df = readers.read_csv(f)
    assert len(df) == 0 and list(df.columns) == ["user", "item", "rating", "timestamp"]
    with pytest.raises(DataValidationError, match=rf"{f}: the source has no data rows"):
        preprocess(df, DataConfig(), source=f)


def test_sql_empty_result_reads_as_no_rows(tmp_path):
    db = tmp_path / "r.db"
    _sqlite(db, [], create="CREATE TABLE ratings (user_id, movie, stars, ts)")
    df = readers.read_sql(f"sqlite:///{db}", "ratings", user_col="user_id", item_col="movie", rating_col="stars",
                          time_col="ts")
    assert len(df) == 0


def test_csv_float_column_with_huge_ids_and_nan_keeps_flagging_the_nan(tmp_path):
    f = write(tmp_path / "n.csv", f"user,item\n{BIG[1]},1\nnan,2\n5,3\n")
    v = Validator(f, lenient=True)
    df = readers.read_csv(f, rating_col=None, time_col=None, validator=v)
    assert df["user"].tolist() == [BIG[1], "5"]
    assert v.issues()[["line", "column", "reason"]].values.tolist() == [[3, "user", "missing value"]]
    with pytest.raises(DataValidationError) as info:
        readers.read_csv(f, rating_col=None, time_col=None, id_type="int")
    assert (info.value.position, info.value.column) == (2, "user") and "beyond the int64 range" in str(info.value)
