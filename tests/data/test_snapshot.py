"""Snapshot on disk: manifest hashes verified on load, content-addressed id, atomic and idempotent save."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from cli_error_line import error_line

from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot, SnapshotError, compute_snapshot_id, interactions_matrix


def make(seed: int = 0) -> Snapshot:
    rng = np.random.default_rng(seed)
    n_items = 12

    def part(rows):
        return sp.random(rows, n_items, density=0.3, format="csr", random_state=rng, dtype=np.float32).sign()

    tr, vtr, vte = part(6), part(2), part(2)
    return Snapshot(
        matrices={"train": tr, "validation_tr": vtr, "validation_te": vte},
        rows={"train": np.arange(6), "validation_tr": np.array([6, 7]), "validation_te": np.array([6, 7])},
        users=IdMap(np.arange(100, 108)),
        items=IdMap(np.arange(500, 500 + n_items)),
        manifest={"protocol": "strong"},
    )


def test_round_trip_and_manifest(tmp_path):
    snap = make()
    snap.save(tmp_path / "s", extra={"source": {"format": "test"}})
    back = Snapshot.load(tmp_path / "s")
    assert back.snapshot_id == snap.snapshot_id == compute_snapshot_id(back)
    for name, m in snap.matrices.items():
        assert (back.matrices[name] != m).nnz == 0
        assert np.array_equal(back.rows[name], snap.rows[name])
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["source"] == {"format": "test"} and manifest["protocol"] == "strong"
    assert set(manifest["files"]) == {"train.npz", "train_rows.npy", "validation_tr.npz", "validation_tr_rows.npy",
                                      "validation_te.npz", "validation_te_rows.npy", "users.parquet", "items.parquet"}
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert back.has("validation") and not back.has("test")


def test_equal_content_equal_id_and_different_content_different_id():
    assert make(0).snapshot_id == make(0).snapshot_id
    assert make(0).snapshot_id != make(1).snapshot_id


def test_tampered_file_is_refused(tmp_path):
    make().save(tmp_path / "s")
    f = tmp_path / "s" / "train_rows.npy"
    np.save(f, np.arange(1, 7))
    with pytest.raises(SnapshotError, match="sha256 does not match"):
        Snapshot.load(tmp_path / "s")
    Snapshot.load(tmp_path / "s", verify=False)  # explicit opt-out still reads


def test_tampered_file_with_rewritten_hash_is_refused(tmp_path):
    """Regression: a file changed together with its manifest hash no longer passes as the same snapshot."""
    from recvae.digest import sha256_file

    make().save(tmp_path / "s")
    f = tmp_path / "s" / "train_rows.npy"
    np.save(f, np.arange(1, 7))
    mf = tmp_path / "s" / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["files"]["train_rows.npy"] = sha256_file(f)
    mf.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="does not match snapshot_id"):
        Snapshot.load(tmp_path / "s")


def test_missing_file_and_missing_manifest(tmp_path):
    make().save(tmp_path / "s")
    (tmp_path / "s" / "items.parquet").unlink()
    with pytest.raises(SnapshotError, match="items.parquet listed in the manifest is missing"):
        Snapshot.load(tmp_path / "s")
    with pytest.raises(SnapshotError, match="no manifest.json"):
        Snapshot.load(tmp_path)


def test_saving_again_is_idempotent_and_another_snapshot_is_refused(tmp_path):
    a = make(0)
    a.save(tmp_path / "s")
    created = json.loads((tmp_path / "s" / "manifest.json").read_text())["created_at"]
    b = make(0)
    b.save(tmp_path / "s")  # identical content: kept as is
    assert b.manifest["created_at"] == created
    with pytest.raises(SnapshotError, match="already holds snapshot"):
        make(1).save(tmp_path / "s")


def test_non_empty_folder_without_manifest_is_refused(tmp_path):
    """Regression: saving over a non-empty folder used to fail with a bare OSError from os.replace."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(SnapshotError, match="not an empty folder"):
        make().save(tmp_path / "s")
    (tmp_path / "e").mkdir()
    make().save(tmp_path / "e")  # an empty folder is fine
    assert Snapshot.load(tmp_path / "e").snapshot_id == make().snapshot_id


def test_history_and_heldout():
    snap = make()
    users, hist = snap.history()
    assert users.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    vtr, vte = snap.heldout("validation")
    expected = (vtr + vte).sign()
    assert (hist[6:] != expected).nnz == 0
    with pytest.raises(SnapshotError, match="no test users"):
        snap.heldout("test")


def test_shape_mismatch_is_refused():
    snap = make()
    with pytest.raises(SnapshotError, match="columns"):
        Snapshot(matrices=snap.matrices, rows=snap.rows, users=snap.users, items=IdMap(np.arange(3)))


# --- incomplete or corrupt snapshots (issue #13): a SnapshotError naming the file, never a traceback ---------------


def edit_manifest(folder, change):
    mf = folder / "manifest.json"
    manifest = json.loads(mf.read_text())
    change(manifest)
    mf.write_text(json.dumps(manifest))


@pytest.mark.parametrize("files", [{}, None, ["train.npz"]], ids=["empty", "absent", "a-list"])
def test_manifest_that_lists_no_files_is_refused(tmp_path, files):
    make().save(tmp_path / "s")
    edit_manifest(tmp_path / "s", lambda m: m.update(files=files) if files is not None else m.pop("files"))
    for verify in (True, False):
        with pytest.raises(SnapshotError, match=r"s/manifest\.json: the manifest lists no files"):
            Snapshot.load(tmp_path / "s", verify=verify)


def test_manifest_file_names_stay_in_the_folder(tmp_path):
    make().save(tmp_path / "s")
    edit_manifest(tmp_path / "s", lambda m: m["files"].update({"../elsewhere.npz": "0" * 64}))
    with pytest.raises(SnapshotError, match="not a file name of this folder"):
        Snapshot.load(tmp_path / "s")


def test_manifest_must_list_every_part_and_the_id_maps(tmp_path):
    make().save(tmp_path / "s")
    edit_manifest(tmp_path / "s", lambda m: m["files"].pop("validation_te.npz"))
    with pytest.raises(SnapshotError, match=r"validation_te\.npz: not listed in the manifest"):
        Snapshot.load(tmp_path / "s")
    edit_manifest(tmp_path / "s", lambda m: m["files"].pop("users.parquet"))
    with pytest.raises(SnapshotError, match=r"users\.parquet: not listed in the manifest"):
        Snapshot.load(tmp_path / "s", verify=False)


def truncate(f):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def test_corrupt_npz_is_named_with_its_hash_check(tmp_path):
    make().save(tmp_path / "s")
    f = tmp_path / "s" / "train.npz"
    truncate(f)
    with pytest.raises(SnapshotError, match=r"train\.npz: sha256 does not match the manifest"):
        Snapshot.load(tmp_path / "s")
    with pytest.raises(SnapshotError, match=r"train\.npz: sha256 does not match the manifest"):
        Snapshot.load(tmp_path / "s", verify=False)  # unreadable: the hash says why


@pytest.mark.parametrize("name", ["train.npz", "train_rows.npy", "items.parquet"])
def test_unreadable_file_whose_hash_matches_is_named(tmp_path, name):
    from recvae.digest import sha256_file

    make().save(tmp_path / "s")
    f = tmp_path / "s" / name
    f.write_bytes(b"not what it should be")
    edit_manifest(tmp_path / "s", lambda m: m["files"].update({name: sha256_file(f)}))
    with pytest.raises(SnapshotError, match=rf"{name}: unreadable \("):
        Snapshot.load(tmp_path / "s")


def test_unreadable_file_without_a_recorded_hash_is_named(tmp_path):
    make().save(tmp_path / "s")
    truncate(tmp_path / "s" / "train.npz")
    edit_manifest(tmp_path / "s", lambda m: m["files"].update({"train.npz": None}))
    with pytest.raises(SnapshotError, match=r"train\.npz: the manifest records no sha256"):
        Snapshot.load(tmp_path / "s")
    with pytest.raises(SnapshotError, match=r"train\.npz: unreadable \(BadZipFile: .*\); the manifest records no sha"):
        Snapshot.load(tmp_path / "s", verify=False)


def test_manifest_that_is_not_an_object_or_not_json(tmp_path):
    make().save(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SnapshotError, match="not a snapshot manifest"):
        Snapshot.load(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{oops")
    with pytest.raises(SnapshotError, match="invalid JSON"):
        Snapshot.load(tmp_path / "s")
    with pytest.raises(SnapshotError, match="invalid JSON"):
        make().save(tmp_path / "s")


@pytest.mark.parametrize("damage", ["no-files", "unlisted-truncated-npz", "corrupt-npz-with-its-hash"])
def test_cli_on_a_broken_snapshot_is_one_error_line(tmp_path, capsys, damage):
    from recvae.digest import sha256_file

    make().save(tmp_path / "s")
    npz = tmp_path / "s" / "train.npz"
    if damage == "no-files":
        edit_manifest(tmp_path / "s", lambda m: m.update(files={}))
    elif damage == "unlisted-truncated-npz":
        truncate(npz)
        edit_manifest(tmp_path / "s", lambda m: m["files"].pop("train.npz"))
    else:
        npz.write_bytes(b"PK\x03\x04 not really a zip")
        edit_manifest(tmp_path / "s", lambda m: m["files"].update({"train.npz": sha256_file(npz)}))
    line = error_line(capsys, ["prepare", "--previous", str(tmp_path / "s"), "--out", str(tmp_path / "new")])
    assert str(tmp_path / "s") in line
    if damage != "no-files":
        assert str(npz) in line
    assert not (tmp_path / "new").exists()


def test_interactions_matrix_holds_ones_once_per_pair():
    m = interactions_matrix(np.array([0, 2, 0, 2]), np.array([1, 0, 1, 3]), 3, 4)
    assert m.dtype == np.float32 and m.shape == (3, 4) and m.has_sorted_indices
    assert m.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
