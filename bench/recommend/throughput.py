"""Throughput on ML-20M-shaped data (about 136k users x 20k items): iter_topn alone (users/s), the store's write +
publish of those top-N lists (rows/s) in SQLite and PostgreSQL, recommend_to_store end to end on a subset, and
implicit ALS `recommend(userids, user_items, N, filter_already_liked_items=True)` on the same users."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness
import numpy as np
import scipy.sparse as sp

from .child import run_worker
from .data import history_stats, n_params, shaped_csr, vae_recommender

logger = logging.getLogger("bench.recommend")
ML20M = {"preset": "ml-20m", "overrides": {}}  # the data of the throughput part (--smoke: the small preset)


def time_recommend_to_store(rec: Any, user_ids: np.ndarray, X: sp.csr_matrix, url: str, top_n: int,
                            chunk_size: int, key: str) -> dict[str, Any]:
    """The whole job on these users: build_input, begin_batch, scoring and writing chunk by chunk, publish."""
    from recvae.serving.recommend import recommend_to_store
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(url) as store, harness.Timer() as t:
        summary = recommend_to_store(rec, (user_ids, X), store, top_n, batch_key=key, model_name="bench-multvae",
                                     chunk_size=chunk_size)
    users, rows = int(summary.user_count or 0), int(summary.row_count or 0)
    return {"users": users, "rows": rows, "status": summary.status, "wall_s": round(t.seconds, 2),
            "users_per_s": round(users / t.seconds, 1), "rows_per_s": round(rows / t.seconds)}


def time_store_write(url: str, user_ids: np.ndarray, item_ids: np.ndarray, top: dict[str, np.ndarray], top_n: int,
                     chunk_size: int, key: str) -> dict[str, Any]:
    """The store side of the job alone: stream precomputed top-N lists `top` (items, scores, counts; as
    recommend_to_store hands them over) through write_shard, then publish."""
    from recvae.serving.store import RecChunk, RecommendationStore

    items, scores, counts = top["items"], top["scores"], top["counts"]

    def chunks() -> Iterator[RecChunk]:
        for s in range(0, len(user_ids), chunk_size):
            e = s + chunk_size
            yield RecChunk(user_ids[s:e], item_ids[np.maximum(items[s:e], 0)], scores[s:e], counts[s:e])

    with RecommendationStore(url) as store, harness.Timer() as total:
        batch = store.begin_batch(key, model_name="bench-multvae", top_n=top_n, n_items=len(item_ids))
        with harness.Timer() as write:
            written = store.write_shard(batch, chunks(), expected_rows=int(counts.sum()))
        with harness.Timer() as pub:
            summary = store.publish(batch)
    return {"users": written["users"], "rows": written["rows"], "status": summary.status,
            "write_s": round(write.seconds, 2), "publish_s": round(pub.seconds, 2), "total_s": round(total.seconds, 2),
            "rows_per_s": round(written["rows"] / total.seconds),
            "users_per_s": round(written["users"] / total.seconds, 1)}


class FreshDatabases:
    """A new, empty database for each measurement: a SQLite file under `work`, or a database on a throwaway
    PostgreSQL server (tests/pgserver.py) started on first use."""

    def __init__(self, work: Path, postgresql: bool) -> None:
        self.work = work
        self.server: Any = None  # tests/pgserver.py's _Server, once started
        self._pg: tuple[Any, ...] | None = None
        self.pg_missing: str | None = None
        if postgresql:
            sys.path.insert(0, str(harness.REPO / "tests"))
            import pgserver  # the tests' throwaway-server helpers

            initdb, pg_ctl = pgserver._find_bin("initdb"), pgserver._find_bin("pg_ctl")
            self._pg = (pgserver, initdb, pg_ctl) if initdb and pg_ctl else None
            self.pg_missing = None if self._pg else "initdb/pg_ctl not found"

    def new(self, name: str, label: str) -> tuple[str, Callable[[], float]]:
        """URL of a new empty database for one measurement, and a function giving its size in MB."""
        if name == "sqlite":
            path = self.work / f"tp-{label}.db"
            for f in self.work.glob(path.name + "*"):
                f.unlink()
            return f"sqlite:///{path}", lambda: sum(f.stat().st_size for f in self.work.glob(path.name + "*")) / 1e6
        import psycopg

        if self.server is None:
            assert self._pg is not None, "new('postgresql') when pg_missing"
            pgserver, initdb, pg_ctl = self._pg
            self.server = pgserver._Server(initdb, pg_ctl)
            self.server.start()
        with psycopg.connect(self.server.url.replace("postgresql+psycopg://", "postgresql://"),
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "bench_{label}"')
        url = self.server.url.rsplit("/", 1)[0] + f"/bench_{label}"

        def size() -> float:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                return row[0] / 1e6 if row else float("nan")

        return url, size

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        for f in self.work.glob("tp-*.db*"):
            f.unlink()


def _score_alone(rec: Any, X: sp.csr_matrix, top_n: int, chunk: int) -> tuple[dict[str, np.ndarray], dict]:
    """iter_topn over every user (forward, seen items masked, top-N), its lists kept for the store runs."""
    from recvae.serving.recommend import iter_topn

    n = X.shape[0]
    top = {"items": np.empty((n, top_n), np.int32), "scores": np.empty((n, top_n), np.float32),
           "counts": np.empty(n, np.int64)}
    with harness.Timer() as t:
        for tn in iter_topn(rec, X, top_n, chunk_size=chunk):
            top["items"][tn.rows], top["scores"][tn.rows], top["counts"][tn.rows] = tn.items, tn.scores, tn.counts
    logger.info("  iter_topn alone: %s users/s (%.0f s)", f"{n / t.seconds:,.0f}", t.seconds)
    return top, {"users": n, "rows": int(top["counts"].sum()), "wall_s": round(t.seconds, 1),
                 "users_per_s": round(n / t.seconds, 1),
                 "rows_per_s": round(int(top["counts"].sum()) / t.seconds), "chunk_size": chunk,
                 "loadavg_end": harness.load_average()}


def _store_runs(cfg: dict[str, Any], rec: Any, X: sp.csr_matrix, top: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per store: the write + publish of the top-N lists alone, then recommend_to_store end to end on a subset."""
    from recvae.serving.recommend import _as_text

    n, n_items = X.shape
    top_n, chunk = cfg["top_n"], cfg["chunk_size"]
    user_ids, item_ids = _as_text(np.arange(1, n + 1)), _as_text(np.arange(1, n_items + 1))
    e2e_n = min(cfg["e2e_users"], n) if cfg["e2e_users"] else n
    e2e_rows = np.linspace(0, n - 1, e2e_n).round().astype(np.int64)  # spread over all users
    dbs = FreshDatabases(Path(cfg["work"]), "postgresql" in cfg["dbs"])
    stores: dict[str, Any] = {}
    try:
        for name in (d for d in ("sqlite", "postgresql") if d in cfg["dbs"]):
            if name == "postgresql" and dbs.pg_missing:
                stores[name] = {"skipped": dbs.pg_missing}
                continue
            url, size = dbs.new(name, "write")
            w = time_store_write(url, user_ids, item_ids, top, top_n, chunk, key=f"write-{name}")
            w["db_mb"] = round(size(), 1)
            logger.info("  %s: write + publish %s rows at %s rows/s", name, f"{w['rows']:,}", f"{w['rows_per_s']:,}")
            url, size = dbs.new(name, "e2e")
            e = time_recommend_to_store(rec, user_ids[e2e_rows], X[e2e_rows], url, top_n, chunk, key=f"e2e-{name}")
            logger.info("  %s: recommend_to_store %s users at %s users/s", name, f"{e['users']:,}",
                        f"{e['users_per_s']:,}")
            stores[name] = {"write_publish": w, "end_to_end": e, **_server_facts(name, url),
                            "loadavg_end": harness.load_average()}
    finally:
        dbs.close()
    return stores


def _server_facts(name: str, url: str) -> dict[str, Any]:
    """PostgreSQL's version and the throwaway server's settings (nothing for SQLite)."""
    if name != "postgresql":
        return {}
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    version = row[0] if row else None
    return {"server_version": version, "server_settings": "fsync=off, full_page_writes=off (tests/pgserver.py)"}


def _als_runs(cfg: dict[str, Any], X: sp.csr_matrix) -> list[dict[str, Any]]:
    """implicit ALS recommend() for the same users and N (factors fitted briefly: cost does not depend on values)."""
    from recvae.models.baselines import ALS

    n, top_n = X.shape[0], cfg["top_n"]
    rows = []
    for factors in cfg["als_factors"]:
        with harness.Timer() as fit:
            model = ALS(factors=factors, iterations=cfg["als_iterations"], regularization=0.01, alpha=1.0).fit(X)._model
        with harness.Timer() as t:
            model.recommend(np.arange(n), X, N=top_n, filter_already_liked_items=True)
        # recalculate_user=True: factors solved from each user's row, the fold-in that Mult-VAE's encoder does
        m = min(n, cfg["als_recalc_users"])
        sub = np.linspace(0, n - 1, m).round().astype(np.int64)
        with harness.Timer() as rc:
            model.recommend(np.arange(m), X[sub], N=top_n, filter_already_liked_items=True, recalculate_user=True)
        rows.append({"factors": factors, "fit_iterations": cfg["als_iterations"], "fit_s": round(fit.seconds, 1),
                     "users": n, "recommend_s": round(t.seconds, 1), "users_per_s": round(n / t.seconds, 1),
                     "num_threads": model.num_threads or os.cpu_count(), "recalc_users": m,
                     "recalc_s": round(rc.seconds, 1), "recalc_users_per_s": round(m / rc.seconds, 1),
                     "loadavg_end": harness.load_average()})
        logger.info("  ALS %d factors: recommend %s users/s, with recalculate_user %s users/s (fit %.0f s)",
                    factors, f"{n / t.seconds:,.0f}", f"{m / rc.seconds:,.0f}", fit.seconds)
    return rows


def worker_throughput(cfg: dict[str, Any]) -> dict[str, Any]:
    """ML-20M shape: scoring alone, store writes (SQLite, PostgreSQL), end to end on a subset, implicit ALS."""
    import torch

    out: dict[str, Any] = {"loadavg_start": harness.load_average()}
    data = cfg.get("data", ML20M)
    X, data_meta = shaped_csr(Path(cfg["work"]), cfg["seed"], data["preset"], **data["overrides"])
    if cfg["users"]:
        X = X[: cfg["users"]]
    n, n_items = X.shape
    out["data"] = {**data_meta, "history_used": history_stats(X)}
    logger.info("  %s-shaped data: %s users x %s items, %s interactions", data["preset"], f"{n:,}", f"{n_items:,}",
                f"{X.nnz:,}")
    rec = vae_recommender(n_items, cfg["hidden"], cfg["latent"], cfg["seed"])
    out["model"] = {"layers": f"{n_items}-{cfg['hidden']}-{cfg['latent']}-{cfg['hidden']}-{n_items}",
                    "hidden": cfg["hidden"], "latent": cfg["latent"],
                    "params": n_params(rec), "weights": "random (Xavier init)",
                    "torch_threads": torch.get_num_threads()}
    top, out["scoring_alone"] = _score_alone(rec, X, cfg["top_n"], cfg["chunk_size"])
    out["stores"] = _store_runs(cfg, rec, X, top)
    out["e2e_users"] = min(cfg["e2e_users"], n) if cfg["e2e_users"] else n
    del top
    out["als"] = _als_runs(cfg, X)
    out["peak_rss_gib"] = round(harness.vm_hwm_gib(), 2)
    out["loadavg_end"] = harness.load_average()
    return out


def part_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The throughput part in one child process."""
    logger.info("throughput: %s shape", args.tp_data["preset"])
    cfg = {"work": str(work), "seed": args.seed, "users": args.tp_users, "data": args.tp_data,
           "hidden": args.tp_hidden, "latent": args.tp_latent, "top_n": args.tp_top_n,
           "chunk_size": args.tp_chunk_size, "e2e_users": args.tp_e2e_users, "dbs": args.tp_dbs.split(","),
           "als_factors": [int(f) for f in args.als_factors.split(",")], "als_iterations": args.als_iterations,
           "als_recalc_users": args.als_recalc_users}
    return run_worker("throughput", cfg, work)


def md_throughput(r: dict[str, Any]) -> list[str]:
    """The throughput part's section: one row per measurement, then notes on the stores and ALS."""
    h, m, s, d = r["data"]["history_used"], r["model"], r["scoring_alone"], r["data"]
    call = ", ".join([f"'{d.get('preset', 'ml-20m')}'", *(f"{k}={v}" for k, v in (d.get("overrides") or {}).items()),
                      f"seed={d['seed']}"])
    lines = [
        "### Throughput on ML-20M-shaped data",
        "",
        f"Command: `{r['command']}` ({r['date']}); load average at the start {r['loadavg_start']}, at the end "
        f"{r['loadavg_end']} on {r['machine_cpus']} CPUs. Peak RSS of the process {r['peak_rss_gib']} GiB.",
        "",
        f"Data: `synthetic.generate({call})` ({d['ratings']:,} ratings), kept "
        f"{d['kept']}: {h['users']:,} users x {h['items']:,} items, {h['interactions']:,} interactions "
        f"(per user mean {h['per_user_mean']}, median {h['per_user_median']:g}). Model: Mult-VAE `{m['layers']}` "
        f"({m['params']:,} parameters, {m['weights']}), torch {m['torch_threads']} threads. Top-{r['top_n']} "
        f"per user, chunks of {s['chunk_size']} users.",
        "",
        "| what | users | rows | wall (s) | users/s | rows/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| Mult-VAE scoring alone (`iter_topn`: forward, seen items masked, top-N; no DB) | {s['users']:,} | "
        f"{s['rows']:,} | {s['wall_s']:,.1f} | **{s['users_per_s']:,.0f}** | {s['rows_per_s']:,} |",
    ]
    for name, res in r["stores"].items():
        if "skipped" in res:
            lines.append(f"| {name} | skipped: {res['skipped']} | | | | |")
            continue
        w, e = res["write_publish"], res["end_to_end"]
        lines.append(
            f"| {name}: store alone (`write_shard` of those lists + `publish`; write {w['write_s']:,.1f} s, publish "
            f"{w['publish_s']:,.1f} s) | {w['users']:,} | {w['rows']:,} | {w['total_s']:,.1f} | "
            f"{w['users_per_s']:,.0f} | **{w['rows_per_s']:,}** |")
        lines.append(
            f"| {name}: `recommend_to_store` end to end ({e['users']:,} users spread over all) | {e['users']:,} | "
            f"{e['rows']:,} | {e['wall_s']:,.1f} | **{e['users_per_s']:,.0f}** | {e['rows_per_s']:,} |")
    for a in r["als"]:
        lines.append(
            f"| implicit ALS, {a['factors']} factors: `recommend(userids, user_items, N={r['top_n']}, "
            f"filter_already_liked_items=True)` (stored user factors) | {a['users']:,} | | {a['recommend_s']:,.1f} | "
            f"**{a['users_per_s']:,.0f}** | |")
        lines.append(
            f"| implicit ALS, {a['factors']} factors: same with `recalculate_user=True` (fold-in from the rows, as "
            f"Mult-VAE does) | {a['recalc_users']:,} | | {a['recalc_s']:,.1f} | {a['recalc_users_per_s']:,.0f} | |")
    return lines + [""] + _throughput_notes(r)


def _throughput_notes(r: dict[str, Any]) -> list[str]:
    """What the store rows and the ALS rows measure."""
    h, m, als = r["data"]["history_used"], r["model"], r["als"]
    stores = []
    for name, res in r["stores"].items():
        if "skipped" in res:
            continue
        extra = f", PostgreSQL {res['server_version']} ({res['server_settings']})" if name == "postgresql" else ""
        stores.append(f"{name}: {res['write_publish']['db_mb']:,.0f} MB for the {res['write_publish']['rows']:,} rows"
                      f"{extra}")
    return [
        "Notes:",
        f"- Stores: {'; '.join(stores)}. The store-alone rows stream the lists exactly as `recommend_to_store` hands "
        "them over (`RecChunk`: raw ids as text), in one transaction (SQLite `executemany`, PostgreSQL binary "
        "`COPY`), then `publish` checks the row counts and flips the batch. Every measurement writes into a new, "
        "empty database. The end-to-end rows are the whole job on a subset of users spread over all of them: "
        "`build_input` (copies the history into canonical form), `begin_batch`, scoring and writing chunk by chunk "
        "(one thread: scoring and writing take turns), `publish`.",
        f"- ALS: `recvae.models.baselines.ALS` (implicit {r['machine_implicit']} CPU ALS) fitted with "
        f"{als[0]['fit_iterations'] if als else '-'} iteration(s) only (fit time "
        + ", ".join(f"{a['factors']} factors {a['fit_s']:,.0f} s" for a in als)
        + "): `recommend` cost does not depend on the factor values. implicit uses "
        f"{als[0]['num_threads'] if als else '-'} threads with OPENBLAS_NUM_THREADS=1. Its `recommend` "
        "returns the top-N ids and scores of every user in memory and writes nothing. Cost per user: Mult-VAE "
        f"encodes the history and decodes {m['latent']} -> {m['hidden']} -> {h['items']:,} items: its last layer is a "
        f"{m['hidden']} x {h['items']:,} product per user, as ALS's with {m['hidden']} factors; "
        "ALS with 200 factors does a third of that product.",
        "",
    ]
