"""Anomalous users from the model's own likelihood: the ELBO terms, their percentiles, the published batch and its
queries on both engines, the MLflow histogram, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_error_line import error_line
from latent_model import GROUPS, ITEMS_PER_GROUP, N_ITEMS, planted_snapshot, trained_vae

from recvae.models.latent import NotLatentModelError, user_elbo
from recvae.models.sparse import CSRBatch
from recvae.models.vae import gaussian_kl
from recvae.serving.anomalies import percentiles, snapshot_anomalies
from recvae.serving.store import OutputStore

N_FAKES = 8


def fakes(seed: int = 5) -> np.ndarray:
    """Profiles that pick 6 items across every taste group: unlike any real user."""
    rng = np.random.default_rng(seed)
    m = np.zeros((N_FAKES, N_ITEMS), np.float32)
    for u in range(N_FAKES):
        groups = rng.choice(GROUPS, size=GROUPS, replace=False)
        items = [g * ITEMS_PER_GROUP + rng.integers(ITEMS_PER_GROUP) for g in groups]
        items += [int(rng.integers(N_ITEMS)) for _ in range(2)]
        m[u, items] = 1.0
    return m


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A planted snapshot with fake profiles among its training users, and a VAE trained on it, saved."""
    root = tmp_path_factory.mktemp("anomalies")
    snap = planted_snapshot(root / "snap", extra=fakes())
    rec = trained_vae(snap)
    rec.save(root / "model")
    fake_ids = {f"u{k}" for k in range(len(snap.users) - N_FAKES, len(snap.users))}
    return {"root": root, "snap": snap, "rec": rec, "model": str(root / "model"), "fakes": fake_ids}


def test_elbo_terms_are_the_networks_own(world):
    rec, snap = world["rec"], world["snap"]
    X = snap.train[:7]
    terms = user_elbo(rec, X)
    x = CSRBatch.from_scipy(X)
    with torch.no_grad():
        mu, logvar = rec.module.encode(x)
        log_pi = torch.log_softmax(rec.module.decode(mu), dim=1).numpy()
        kl = gaussian_kl(mu, logvar).numpy()
    dense = X.toarray()
    ll = (log_pi * dense).sum(axis=1)
    n = dense.sum(axis=1)
    np.testing.assert_allclose(terms["nll_per_item"], -ll / n, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(terms["neg_elbo"], -ll + kl, rtol=1e-5)
    assert list(terms["n_items"]) == list(n.astype(int))


def test_kl_comes_from_the_modules_kl_so_another_prior_is_honoured(world, monkeypatch):
    rec = world["rec"]
    X = world["snap"].train[:3]
    before = user_elbo(rec, X)
    monkeypatch.setattr(type(rec.module), "kl", lambda self, x, mu, logvar, z: torch.full((x.n_rows,), 7.0))
    after = user_elbo(rec, X)
    assert list(after["kl"]) == [7.0] * 3
    np.testing.assert_allclose(after["neg_elbo"] - 7.0, before["neg_elbo"] - before["kl"], rtol=1e-5)


def test_percentiles_against_the_reference():
    ref = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    got = percentiles(np.array([0.5, 2.0, 4.0, 9.0, np.nan]), ref)
    np.testing.assert_allclose(got[:4], [0.0, 50.0, 100.0, 100.0])
    assert np.isnan(got[4])


def test_fake_profiles_score_as_anomalous(world):
    frame, interactions = snapshot_anomalies(world["rec"], world["snap"])
    assert len(frame) == len(world["snap"].users) and frame["user_id"].is_unique
    assert len(interactions) == int(world["snap"].history()[1].sum())
    is_fake = frame["user_id"].isin(world["fakes"])
    for score in ("nll_per_item", "neg_elbo"):
        assert frame.loc[is_fake, f"{score}_pct"].median() > 90, score
        assert frame.loc[~is_fake, f"{score}_pct"].median() < 60, score
    assert frame[[c for c in frame.columns if c.endswith("_pct")]].stack().between(0, 100).all()


def test_anomalies_step_publishes_a_batch_and_its_queries_on_both_engines(world, db_url):
    from recvae import pipeline

    first = pipeline.anomalies_step(model_uri=world["model"], snapshot_dir=world["snap"].path, db_url=db_url,
                                    batch_key="a1", log_mlflow=False)
    assert first["status"] == "published" and first["users"] == first["row_count"] == len(world["snap"].users)
    again = pipeline.anomalies_step(model_uri=world["model"], snapshot_dir=world["snap"].path, db_url=db_url,
                                    batch_key="a1", log_mlflow=False)
    assert again["reused"] and again["batch_id"] == first["batch_id"]
    second = pipeline.anomalies_step(model_uri=world["model"], snapshot_dir=world["snap"].path, db_url=db_url,
                                     batch_key="a2", log_mlflow=False, keep=1)
    assert second["expired"] == [first["batch_id"]]
    with OutputStore(db_url) as store:
        assert store.current("user_anomalies")["batch_id"] == second["batch_id"]
        top = store.query("anomalous_users", score="nll_per_item", n=N_FAKES)
        assert len(top) == N_FAKES and [r["nll_per_item"] for r in top] == sorted(
            (r["nll_per_item"] for r in top), reverse=True)
        assert len({r["user_id"] for r in top} & world["fakes"]) >= N_FAKES // 2
        stored = store.read("user_anomalies")
        for score in ("kl", "neg_elbo"):
            values = [r[score] for r in store.query("anomalous_users", score=score, n=5)]
            assert values == sorted(values, reverse=True) and values[0] == pytest.approx(stored[score].max())
        low = [r["kl"] for r in store.query("anomalous_users", score="kl_low", n=5)]
        assert low == sorted(low) and low[0] == pytest.approx(stored["kl"].min())
        n_low = len(store.query("anomaly_dominated_items", score="kl_low", min_pct=0.0, min_share=1.0, min_users=1,
                                n=1000))
        assert n_low == N_ITEMS  # every user's 100 - kl_pct >= 0
        items = store.query("anomaly_dominated_items", score="kl", min_pct=0.0, min_share=0.0, min_users=1, n=1000)
        assert len(items) == N_ITEMS and all(r["anomalous_share"] == pytest.approx(1.0) for r in items)
        frame = store.read("user_anomalies")
        p95 = float(np.nanpercentile(frame["nll_per_item_pct"], 95))
        mostly = store.query("anomaly_dominated_items", score="nll_per_item", min_pct=p95, min_share=0.5, min_users=1,
                             n=1000)
        inter = store.read("user_anomalies", "anomaly_interactions")
        anomalous = set(frame.loc[frame["nll_per_item_pct"] >= p95, "user_id"])
        by_item = inter.assign(a=inter["user_id"].isin(anomalous)).groupby("item_id")["a"].agg(["size", "mean"])
        assert {r["item_id"] for r in mostly} == set(by_item.index[by_item["mean"] >= 0.5])
        with store.db.engine.connect() as conn:
            n_rows = conn.exec_driver_sql("SELECT COUNT(*) FROM recvae_user_anomalies").scalar()
        assert n_rows == len(world["snap"].users)  # the expired batch's rows are gone


def test_the_histogram_goes_to_mlflow(world, mlflow_store, tmp_path):
    import mlflow

    from recvae import pipeline

    result = pipeline.anomalies_step(model_uri=world["model"], snapshot_dir=world["snap"].path,
                                     db_url=f"sqlite:///{tmp_path / 'r.db'}", batch_key="h1")
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(result["mlflow_run_id"], "anomalies")] == [
        "anomalies/anomaly_scores.png"]
    assert "anomaly_neg_elbo_p99" in client.get_run(result["mlflow_run_id"]).data.metrics


def test_cli_anomalies_prints_the_batch_and_top_users(world, tmp_path, capsys):
    from recvae import cli

    db = f"sqlite:///{tmp_path / 'r.db'}"
    argv = ["anomalies", "--model", world["model"], "--snapshot", str(world["snap"].path), "--db", db, "--no-mlflow"]
    assert cli.main([*argv, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "published" in out and "neg_elbo_pct" in out
    assert "--top" in error_line(capsys, [*argv, "--top", "-1"])


def test_a_baseline_has_no_latent_answers(tmp_path, capsys):
    import scipy.sparse as sp

    from recvae.data.idmap import IdMap
    from recvae.models.baselines import Popularity

    model = Popularity().fit(sp.csr_matrix(np.eye(3, dtype=np.float32)))
    model.items = IdMap(["a", "b", "c"])
    with pytest.raises(NotLatentModelError, match="popularity model has no latent"):
        user_elbo(model, sp.csr_matrix(np.eye(3, dtype=np.float32)))
    line = error_line(capsys, ["anomalies", "--model", str(model.save(tmp_path / "m")), "--snapshot",
                               str(tmp_path / "nope")])
    assert "popularity model has no latent" in line


def test_db_query_runs_the_output_queries(world, tmp_path, capsys):
    from recvae import cli, pipeline

    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli.main(["db", "query", "anomalous_users", "--param", "score=kl", "--db", db]) == 0
    assert "no rows" in capsys.readouterr().out  # the tables exist before any batch
    pipeline.anomalies_step(model_uri=world["model"], snapshot_dir=world["snap"].path, db_url=db, batch_key="q",
                            log_mlflow=False)
    argv = ["db", "query", "anomaly_dominated_items", "--param", "score=nll_per_item", "--param", "min_pct=0",
            "--param", "min_share=0.0", "--param", "min_users=1", "--param", "n=5", "--db", db]
    assert cli.main(argv) == 0
    assert "anomalous_share" in capsys.readouterr().out
