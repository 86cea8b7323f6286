"""prepare(): the whole data path, manifest contents, idempotence, id stability against a previous snapshot."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_error_line import error_line

from recvae import cli
from recvae.config import Config, ConfigError, apply_overrides
from recvae.data import synthetic
from recvae.data.prepare import as_source, default_quarantine, prepare
from recvae.data.readers import Source
from recvae.data.snapshot import Snapshot, SnapshotError
from recvae.data.validate import DataValidationError


def csv_of(df: pd.DataFrame, path) -> Source:
    df.to_csv(path, index=False)
    return Source(format="csv", path=str(path))


def test_default_source_is_synthetic_and_manifest_is_complete(tmp_path):
    snap = prepare(None, tmp_path / "snap")
    loaded = Snapshot.load(tmp_path / "snap")
    assert loaded.snapshot_id == snap.snapshot_id
    m = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert m["source"]["format"] == "synthetic" and m["source_fingerprint"]["kind"] == "synthetic"
    assert m["parameters"]["data"]["threshold"] == 3.5 and m["parameters"]["split"]["seed"] == 98765
    assert m["preprocess"]["rows_read"] == len(synthetic.generate("small"))
    assert m["interactions"] == sum(p["interactions"] for p in m["counts"].values())
    assert 0 < m["density"] < 1 and m["protocol"] == "strong"
    assert set(m["counts"]) == {"train", "validation_tr", "validation_te", "test_tr", "test_te"}
    assert m["validation"]["rows_dropped"] == 0
    assert set(snap.manifest["timings_s"]) == {"read", "preprocess", "split", "save"}


def test_same_input_twice_gives_the_same_snapshot_id(tmp_path):
    src = csv_of(synthetic.generate("small", n_users=300, seed=2), tmp_path / "r.csv")
    a = prepare(src, tmp_path / "a")
    b = prepare(src, tmp_path / "b")
    assert a.snapshot_id == b.snapshot_id
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["source_fingerprint"] == \
        json.loads((tmp_path / "b" / "manifest.json").read_text())["source_fingerprint"]
    again = prepare(src, tmp_path / "a")  # same folder: kept as is
    assert again.snapshot_id == a.snapshot_id
    other = prepare(src, tmp_path / "c", apply_overrides(Config(), ["split.seed=1"]))
    assert other.snapshot_id != a.snapshot_id
    with pytest.raises(SnapshotError, match="already holds"):
        prepare(src, tmp_path / "a", apply_overrides(Config(), ["split.seed=1"]))


def test_tampered_snapshot_is_refused_on_load(tmp_path):
    prepare(None, tmp_path / "s")
    npz = tmp_path / "s" / "test_te.npz"
    data = bytearray(npz.read_bytes())
    data[-10] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="test_te.npz: sha256 does not match"):
        Snapshot.load(tmp_path / "s")


def test_previous_snapshot_keeps_user_and_item_indices(tmp_path):
    old = synthetic.generate("small", n_users=400, seed=5)
    first = prepare(csv_of(old, tmp_path / "old.csv"), tmp_path / "v1")
    # newer data: one popular old item disappears, new users and new items arrive, an old user leaves
    gone_item = int(old["item"].value_counts().index[0])
    gone_user = int(old["user"].iloc[0])
    new = synthetic.generate("small", n_users=150, seed=6)
    new = new.assign(user=new["user"] + 10_000, item=np.where(new["item"] % 7 == 0, new["item"] + 5_000, new["item"]))
    newer = pd.concat([old, new], ignore_index=True)
    newer = newer[(newer["item"] != gone_item) & (newer["user"] != gone_user)]
    second = prepare(csv_of(newer, tmp_path / "new.csv"), tmp_path / "v2", previous=tmp_path / "v1")

    n_old = first.n_items
    assert second.items.to_index(first.items.raw_ids).tolist() == list(range(n_old))
    assert second.users.to_index(first.users.raw_ids).tolist() == list(range(len(first.users)))
    trained = second.items.raw_ids[np.flatnonzero(np.asarray(second.train.sum(axis=0)).ravel() > 0)]
    appended = set(second.items.raw_ids[n_old:].tolist())
    assert appended == set(trained.tolist()) - set(first.items.raw_ids.tolist())
    assert {i for i in appended if i > 5_000}  # the new items are among them
    col = int(second.items.to_index([gone_item])[0])
    assert col < n_old and second.train[:, col].nnz == 0  # kept its column, no training data
    assert json.loads((tmp_path / "v2" / "manifest.json").read_text())["previous_snapshot"] == first.snapshot_id


def test_lenient_prepare_quarantines_next_to_the_snapshot(tmp_path):
    df = synthetic.generate("small", n_users=300, seed=1)
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[5] = "1,oops,4.0,100"
    lines[9] = "2,3"
    path.write_text("\n".join(lines) + "\n")
    src = Source(format="csv", path=str(path), id_type="int")
    with pytest.raises(DataValidationError, match=r"r\.csv, line 6, column 'item': non-numeric id 'oops'"):
        prepare(src, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()
    snap = prepare(src, tmp_path / "lenient", apply_overrides(Config(), ["data.lenient=true"]))
    q = pd.read_csv(default_quarantine(tmp_path / "lenient"))
    assert q["line"].tolist() == [6, 10]
    report = snap.manifest["validation"]
    assert report["rows_dropped"] == 2 and report["rows_kept"] == len(df) - 2
    assert report["by_reason"] == {"non-numeric id": 1, "wrong number of fields": 1}


def test_temporal_split_through_prepare(tmp_path):
    snap = prepare(None, None, apply_overrides(Config(), ["split.kind=temporal"]))
    assert snap.manifest["protocol"] == "temporal" and snap.path is None
    assert snap.has("validation") and snap.has("test")


def test_unresolved_sources_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(tmp_path))
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n")
    assert as_source(Source(dataset="ml-100k")).format == "movielens"
    assert as_source(Source(path=str(tmp_path / "ml-100k" / "u.data"))).format == "movielens"
    assert as_source(Source(dataset="synthetic")).format == "synthetic"
    assert as_source("ml-100k").path.endswith("u.data")


def test_already_split_sources_with_a_previous_snapshot(tmp_path):
    d = tmp_path / "lg"
    d.mkdir()
    (d / "train.txt").write_text("0 0 1 2\n1 1 2 3\n2 0 3\n")
    (d / "test.txt").write_text("0 3\n1 0\n2 1\n")
    first = prepare(Source(format="lightgcn", path=str(d)), tmp_path / "a")
    (d / "train.txt").write_text("0 0 1 2 4\n1 1 2 3\n2 0 3\n3 4 5\n")
    second = prepare(Source(format="lightgcn", path=str(d)), tmp_path / "b", previous=first)
    assert second.items.to_index(first.items.raw_ids).tolist() == list(range(first.n_items))
    assert second.manifest["protocol"] == "lightgcn"
    assert "do not apply" in second.manifest["parameters"]["note"]


# --- real data (RECVAE_DATA_HOME) -----------------------------------------------------------------


def counts(snap):
    return {k: v["interactions"] for k, v in snap.summary().items()}


@pytest.mark.realdata
def test_real_prepare_ml100k(data_home):
    snap = prepare(data_home / "ml-100k" / "u.data", None)
    pre = snap.manifest["preprocess"]
    assert pre["rows_read"] == 100_000
    assert pre["after_binarize"] == 55_375  # ratings 4 and 5
    assert pre["users"] == snap.manifest["split"]["n_users"] == len(snap.users)
    assert snap.manifest["split"]["n_heldout_users"] == round(10_000 * len(snap.users) / 136_677)


@pytest.mark.realdata
def test_real_prepare_ml_latest_small(data_home):
    snap = prepare(data_home / "ml-latest-small" / "ratings.csv", None)
    assert snap.manifest["preprocess"]["rows_read"] == 100_836
    assert snap.manifest["validation"]["rows_kept"] == 100_836
    assert snap.manifest["preprocess"]["after_binarize"] == int(
        (pd.read_csv(data_home / "ml-latest-small" / "ratings.csv")["rating"] > 3.5).sum())


@pytest.mark.realdata
def test_real_prepare_pro_sg(data_home, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(data_home))
    snap = prepare("ml-1m-pro-sg", None)
    assert sum(counts(snap).values()) == 575_174
    assert (len(snap.users), snap.n_items) == (6_034, 3_459)
    assert snap.matrices["validation_tr"].shape[0] == snap.matrices["test_tr"].shape[0] == 1_000
    assert counts(snap)["validation_te"] == 18_900 and counts(snap)["test_te"] == 18_652


@pytest.mark.realdata
def test_real_prepare_gowalla(data_home, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(data_home))
    snap = prepare("gowalla", None)
    assert (len(snap.users), snap.n_items) == (29_858, 40_981)
    assert counts(snap)["train"] == 810_128 and counts(snap)["test_te"] == 217_242
    assert snap.manifest["protocol"] == "lightgcn" and not snap.has("validation")


@pytest.mark.realdata
def test_real_prepare_ml1m_implicit(data_home, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(data_home))
    snap = prepare("ml-1m", None)
    pre = snap.manifest["preprocess"]
    counts = (pre["rows_read"], pre["after_count_filter"], pre["users"], pre["items"])
    assert counts == (1_000_209, 1_000_209, 6_040, 3_706)
    assert pre["threshold_applied"] is None
    dropped = snap.manifest["split"]["heldout_rows_dropped_unseen_items"]
    assert snap.manifest["interactions"] + dropped == 1_000_209
    assert len(snap.users) == 6_040


def test_csv_without_rating_column_is_implicit(tmp_path):
    df = synthetic.generate("small", n_users=200, seed=9)[["user", "item"]]
    df.to_csv(tmp_path / "clicks.csv", index=False)
    snap = prepare(Source(format="csv", path=str(tmp_path / "clicks.csv"), rating_col=None, time_col=None), None)
    assert snap.manifest["preprocess"]["threshold_applied"] is None
    assert snap.manifest["preprocess"]["after_binarize"] == len(df)


# --- the prepare command on bad input (issue #13) ------------------------------------------------------------


def _ratings_csv(path, users, n_items=8):
    """Every user rates items 0..n_items-1 with 5 (kept by the default threshold and user filter)."""
    rows = "".join(f"{u},{i},5,{i}\n" for u in users for i in range(n_items))
    path.write_text("user,item,rating,timestamp\n" + rows)
    return path


BIG = ["9223372036854775808", str(2**70), str(2**70 + 1)]  # beyond int64; the last two are one float64


def test_prepare_keeps_ids_beyond_int64_distinct(tmp_path, capsys):
    f = _ratings_csv(tmp_path / "r.csv", [*range(1, 129), *BIG])
    assert cli.main(["--log-level", "ERROR", "prepare", "--input", str(f), "--out", str(tmp_path / "s")]) == 0
    snap = Snapshot.load(tmp_path / "s")
    assert len(snap.users) == 131
    assert set(BIG) <= set(snap.users.raw_ids.tolist())


def test_prepare_id_type_int_refuses_ids_beyond_int64(tmp_path, capsys):
    f = _ratings_csv(tmp_path / "r.csv", [1, 2, BIG[1]])
    line = error_line(capsys, ["prepare", "--input", str(f), "--id-type", "int", "--out", str(tmp_path / "s")])
    assert line.startswith(f"recvae prepare: error: {f}, line 18, column 'user': id beyond the int64 range")
    assert not (tmp_path / "s").exists()


def test_prepare_header_only_csv_says_there_are_no_data_rows(tmp_path, capsys):
    f = tmp_path / "h.csv"
    f.write_text("user,item,rating,timestamp\n")
    line = error_line(capsys, ["prepare", "--input", str(f), "--out", str(tmp_path / "s")])
    assert line == f"recvae prepare: error: {f}: the source has no data rows"


def _bad_csv(tmp_path):
    f = _ratings_csv(tmp_path / "r.csv", range(1, 60))
    with open(f, "a") as out:
        out.write("5,oops,4.0,1\n")
    return f


def test_prepare_refuses_to_overwrite_an_existing_quarantine_file(tmp_path, capsys):
    f, q = _bad_csv(tmp_path), tmp_path / "notes.txt"
    q.write_text("not mine to lose\n")
    argv = ["prepare", "--input", str(f), "--id-type", "int", "--lenient", "--quarantine", str(q),
            "--out", str(tmp_path / "s")]
    line = error_line(capsys, argv)
    assert str(q) in line and "already exists" in line and "--force" in line
    assert q.read_text() == "not mine to lose\n" and not (tmp_path / "s").exists()
    assert cli.main([*argv, "--force", "--log-level", "ERROR"]) == 0
    assert pd.read_csv(q)["reason"].tolist() == ["non-numeric id"]


def test_prepare_quarantine_that_is_a_folder_is_one_error_line(tmp_path, capsys):
    f = _bad_csv(tmp_path)
    (tmp_path / "q").mkdir()
    for extra in ([], ["--force"]):
        line = error_line(capsys, ["prepare", "--input", str(f), "--id-type", "int", "--lenient", "--quarantine",
                                   str(tmp_path / "q"), "--out", str(tmp_path / "s"), *extra])
        assert str(tmp_path / "q") in line and "folder" in line


def test_prepare_never_quarantines_over_its_input(tmp_path, capsys):
    f = _bad_csv(tmp_path)
    before = f.read_text()
    line = error_line(capsys, ["prepare", "--input", str(f), "--id-type", "int", "--lenient", "--quarantine", str(f),
                               "--force", "--out", str(tmp_path / "s")])
    assert "input" in line and f.read_text() == before


def test_quarantine_checks_in_the_api(tmp_path):
    f = _bad_csv(tmp_path)
    lenient = apply_overrides(Config(), ["data.lenient=true"])
    src = Source(format="csv", path=str(f), id_type="int")
    (tmp_path / "q.csv").write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        prepare(src, tmp_path / "a", lenient, quarantine=tmp_path / "q.csv")
    prepare(src, tmp_path / "a", lenient, quarantine=tmp_path / "q.csv", force=True)
    default_quarantine(tmp_path / "b").write_text("an earlier run's\n")  # the default path is ours: rewritten
    prepare(src, tmp_path / "b", lenient)
    assert pd.read_csv(default_quarantine(tmp_path / "b"))["line"].tolist() == [59 * 8 + 2]
