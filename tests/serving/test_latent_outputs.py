"""Latent user preferences (embeddings: Parquet, SQL on both engines, similar users), similar items (exact and
faiss, SQL) and the pyfunc's outputs beyond the lists."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from cli_error_line import error_line
from latent_model import ITEMS_PER_GROUP, N_ITEMS, group_of_item, planted_snapshot, trained_vae

from recvae.models.latent import item_vectors, user_embeddings
from recvae.models.sparse import CSRBatch
from recvae.serving.embeddings import similar_users, snapshot_embeddings
from recvae.serving.pyfunc import OUTPUTS, RecommenderModel
from recvae.serving.similar_items import choose_method, similar_columns, similar_items_frame
from recvae.serving.store import OutputStore


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    snap = planted_snapshot(root / "snap")
    rec = trained_vae(snap)
    rec.save(root / "model")
    return {"root": root, "snap": snap, "rec": rec, "model": str(root / "model")}


def test_embeddings_are_the_posterior_means(world):
    rec, snap = world["rec"], world["snap"]
    frame = snapshot_embeddings(rec, snap)
    assert len(frame) == len(snap.users) and frame["user_id"].is_unique
    users, h = snap.history()
    with torch.no_grad():
        mu = rec.module.encode(CSRBatch.from_scipy(h[:5]))[0].numpy()
    first = {str(snap.users.to_raw([u])[0]): mu[k] for k, u in enumerate(users[:5])}
    for uid, z in first.items():
        np.testing.assert_allclose(frame.set_index("user_id").loc[uid, "embedding"], z, rtol=1e-5, atol=1e-6)


def test_similar_users_share_a_taste_group(world):
    rec, snap = world["rec"], world["snap"]
    frame = snapshot_embeddings(rec, snap)
    users, h = snap.history()
    group = {str(snap.users.to_raw([u])[0]): np.bincount(h[k].indices // ITEMS_PER_GROUP).argmax()
             for k, u in enumerate(users)}
    hits = []
    for uid in list(group)[:20]:
        near = similar_users(frame, uid, 5)
        assert uid not in set(near["user_id"]) and list(near["rank"]) == [1, 2, 3, 4, 5]
        hits += [group[v] == group[uid] for v in near["user_id"]]
    assert np.mean(hits) > 0.8


def test_embeddings_step_writes_parquet_and_sql_on_both_engines(world, db_url, tmp_path):
    from recvae import pipeline

    out = tmp_path / "emb.parquet"
    result = pipeline.embeddings_step(model_uri=world["model"], snapshot_dir=world["snap"].path, db_url=db_url,
                                      batch_key="e1", parquet=out)
    assert result["status"] == "published" and result["users"] == len(world["snap"].users) and result["dim"] == 8
    table = pq.read_table(out)
    assert table.column_names == ["user_id", "embedding"] and table.num_rows == result["users"]
    with OutputStore(db_url) as store:
        stored = store.read("user_embeddings")
        with store.db.engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT embedding FROM recvae_user_embeddings LIMIT 1").scalar()
    if db_url.startswith("sqlite"):
        assert isinstance(json.loads(raw), list)  # JSON text in SQLite
    else:
        assert isinstance(raw, list) and isinstance(raw[0], float)  # a REAL[] in PostgreSQL
    parquet = table.to_pandas().set_index("user_id")
    for uid, z in stored.set_index("user_id")["embedding"].items():
        np.testing.assert_allclose(z, parquet.loc[uid, "embedding"], rtol=1e-6)


def test_similar_columns_exact_and_faiss_agree():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    exact_c, exact_s = similar_columns(v, 10, method="exact")
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = unit @ unit.T
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_array_equal(exact_c, np.argsort(-s, axis=1)[:, :10])
    flat_c, flat_s = similar_columns(v, 10, method="flat")
    np.testing.assert_array_equal(flat_c, exact_c)
    np.testing.assert_allclose(flat_s, exact_s, atol=1e-5)
    ivf_c, _ = similar_columns(v, 10, method="ivf")
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ivf_c, exact_c, strict=True)]) > 0.9
    assert (exact_c != np.arange(300)[:, None]).all()
    assert choose_method(1000) == "exact" and choose_method(60_000) == "flat" and choose_method(10**6) == "ivf"
    c, _ = similar_columns(v[:3], 10, method="exact")
    assert c.shape == (3, 2)


def test_similar_items_come_from_the_decoder_rows_and_share_a_group(world):
    rec = world["rec"]
    vectors = item_vectors(rec)
    assert vectors.shape[0] == N_ITEMS
    np.testing.assert_array_equal(vectors, rec.module.decoder[-1].weight.detach().numpy())
    frame = similar_items_frame(rec, 3)
    assert len(frame) == 3 * N_ITEMS and (frame["item_id"] != frame["similar_item_id"]).all()
    same = [group_of_item(int(a[1:])) == group_of_item(int(b[1:]))
            for a, b in zip(frame["item_id"], frame["similar_item_id"], strict=True)]
    assert np.mean(same) > 0.8


def test_similar_items_step_and_query_on_both_engines(world, db_url):
    from recvae import pipeline

    result = pipeline.similar_items_step(model_uri=world["model"], top_n=4, db_url=db_url, batch_key="s1")
    assert result["row_count"] == 4 * N_ITEMS and result["items"] == N_ITEMS
    with OutputStore(db_url) as store:
        rows = store.query("similar_items", item_id="i3", n=3)
    expected = similar_items_frame(world["rec"], 3)
    expected = expected[expected["item_id"] == "i3"]
    assert [r["similar_item_id"] for r in rows] == expected["similar_item_id"].tolist()
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["score"] for r in rows] == pytest.approx(expected["score"].tolist(), abs=1e-5)


class _Context:
    def __init__(self, path: str) -> None:
        self.artifacts = {"recommender": path}


def test_pyfunc_outputs_beyond_the_lists(world):
    model = RecommenderModel()
    model.load_context(_Context(world["model"]))
    history = pd.DataFrame({"user": ["a", "a", "a", "b", "b", "c"], "item": ["i1", "i2", "i3", "i12", "zz", "i25"]})
    anomaly = model.predict(None, history, {"output": "anomaly"})
    assert list(anomaly.columns) == ["user", "n_items", "nll_per_item", "kl", "neg_elbo"]
    assert list(anomaly["user"]) == ["a", "b", "c"] and list(anomaly["n_items"]) == [3, 1, 1]
    emb = model.predict(None, history, {"output": "embedding"})
    assert len(emb.loc[0, "embedding"]) == 8
    X = __import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix(
        (np.ones(3, np.float32), ([0, 0, 0], [1, 2, 3])), shape=(1, N_ITEMS))
    np.testing.assert_allclose(emb.loc[0, "embedding"], user_embeddings(world["rec"], X)[0], rtol=1e-5)
    sim = model.predict(None, history, {"output": "similar_items", "top_n": 2})
    assert list(sim.columns) == ["item", "rank", "similar_item", "score"]
    assert sorted(set(sim["item"])) == ["i1", "i12", "i2", "i25", "i3"] and len(sim) == 10
    top = model.predict(None, history, {"top_n": 2, "deny_items": ["i4"]})
    assert list(top.columns) == ["user", "rank", "item", "score"] and "i4" not in set(top["item"])
    with pytest.raises(ValueError, match="params.output must be one of"):
        model.predict(None, history, {"output": "nope"})
    assert set(OUTPUTS) == {"topn", "anomaly", "embedding", "similar_items"}


def test_cli_embeddings_similar_users_and_similar_items(world, tmp_path, capsys):
    from recvae import cli

    db = f"sqlite:///{tmp_path / 'r.db'}"
    snap = str(world["snap"].path)
    assert cli.main(["embeddings", "--model", world["model"], "--snapshot", snap, "--db", db,
                     "--parquet", str(tmp_path / "e.parquet")]) == 0
    assert "published" in capsys.readouterr().out
    assert cli.main(["embeddings", "--db", db, "--similar-to", "u5", "--top-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "user_id" in out and len(out.strip().splitlines()) == 5
    assert "u-none" in error_line(capsys, ["embeddings", "--db", db, "--similar-to", "u-none"])
    assert cli.main(["similar-items", "--model", world["model"], "--top-n", "5", "--db", db]) == 0
    assert "similar_items" in capsys.readouterr().out
    assert "--top-n" in error_line(capsys, ["similar-items", "--model", world["model"], "--top-n", "0"])
