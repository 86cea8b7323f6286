"""Benchmark the batch top-N job (recvae.serving.recommend): bounded memory at 1M users x 50k items, and throughput on
ML-20M-shaped data (scoring alone, SQLite, PostgreSQL, and implicit's ALS `recommend` on the same users).
Writes bench/results/recommend.json and recommend.md (a part run again replaces only its own section).

    .venv/bin/python bench/bench_recommend.py                      # default: all three parts (~14 min)
    .venv/bin/python bench/bench_recommend.py --parts memory --mem-score all --mem-users 1000000 \\
        --mem-hidden 64 --mem-latent 32 --mem-top-n 10           # every one of 1M users scored (long)

Parts (--parts, comma-separated):
  memory      one fresh process per user count (--mem-users): loads that many users' histories (a CSR built
              without any dense users x items array), runs recommend_to_store into SQLite, and reports peak RSS
              (/proc VmHWM and getrusage ru_maxrss, psutil samples over time) and wall time. --mem-score subset (default)
              scores a fixed number of users spread over all of them (shard 0 of n of the sharded job: the whole
              input is held, only 1/n of it scored); --mem-score all scores and publishes every user.
  throughput  synthetic ML-20M shape (about 136k users x 20k items): iter_topn alone (users/s), the store's write
              + publish of those top-N lists (rows/s) in SQLite and PostgreSQL, recommend_to_store end to end on
              a subset, and implicit ALS `recommend(userids, user_items, N, filter_already_liked_items=True)`.
  breakdown   cost of each step of scoring one chunk (model forward, copies, NaN check, top-k), per user.

Heavy work runs in child processes (this script with --_worker), so each one's peak RSS is its own.
"""

from __future__ import annotations

import os

# Before numpy is imported: implicit wants single-threaded BLAS (it parallelises itself), and child processes
# inherit the setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
DEFAULT_WORK = REPO / "bench" / "out" / "recommend"
GIB = 2**30


# ---------------------------------------------------------------------------------------------------------------
# measuring


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def hwm_rss_gib() -> float:
    """Peak RSS of this process's own address space (/proc VmHWM): unlike ru_maxrss, it does not carry over the
    parent's peak into a spawned child."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def current_rss_gib() -> float:
    """Resident set size now, from /proc (no psutil needed)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


class RssSampler:
    """Samples this process's RSS with psutil every `interval` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        try:
            import psutil

            self._proc: Any = psutil.Process()
            self.available = True
        except ImportError:
            self._proc, self.available = None, False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, self._proc.memory_info().rss / GIB))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        if self.available:
            self._thread.start()
        return self

    def stop(self) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()

    def max(self) -> float | None:
        return max(r for _, r in self.samples) if self.samples else None

    def series(self, points: int = 60) -> list[list[float]]:
        """At most `points` samples [seconds, GiB], each the maximum of its stretch of time (so peaks survive)."""
        if not self.samples:
            return []
        step = max(1, -(-len(self.samples) // points))
        out = []
        for i in range(0, len(self.samples), step):
            part = self.samples[i : i + step]
            out.append([round(part[-1][0], 1), round(max(r for _, r in part), 3)])
        return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU, memory and library versions (read from package metadata: the parent process stays small)."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    from machine import cpu_model, ram_gib

    cpu, mem = cpu_model(), ram_gib()
    versions = {}
    for pkg in ("torch", "numpy", "scipy", "implicit", "psycopg", "psutil"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(),
            "python": platform.python_version(), **versions, "sqlite": sqlite3.sqlite_version,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------------------------
# data (CSR histories, never a dense users x items array)


def csr_from_pairs(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users x items CSR from 0-based (user, item) pairs sorted by user (as the generator emits them)."""
    counts = np.bincount(user, minlength=n_users)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_matrix((np.ones(len(item), np.float32), item.astype(np.int32), indptr), shape=(n_users, n_items))


def history_stats(X: sp.csr_matrix) -> dict[str, Any]:
    lengths = np.diff(X.indptr)
    return {"users": int(X.shape[0]), "items": int(X.shape[1]), "interactions": int(X.nnz),
            "per_user_mean": round(float(lengths.mean()), 1), "per_user_median": float(np.median(lengths)),
            "per_user_p10": float(np.percentile(lengths, 10)), "per_user_p90": float(np.percentile(lengths, 90)),
            "per_user_max": int(lengths.max())}


def mem_data_dir(work: Path, n_users: int, n_items: int, mean_per_user: float, seed: int) -> Path:
    return work / f"mem-{n_users}x{n_items}-m{mean_per_user:g}-s{seed}"


def build_mem_data(work: Path, n_users: int, n_items: int, mean_per_user: float, seed: int) -> dict[str, Any]:
    """Generate the synthetic histories once and store them as raw CSR arrays (indptr int64, indices int32), so a
    scoring process can read exactly the first U users without touching the rest."""
    from recvae.data import synthetic

    d = mem_data_dir(work, n_users, n_items, mean_per_user, seed)
    meta_file = d / "meta.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    df = synthetic.generate("ml-20m", n_users=n_users, n_items=n_items, mean_per_user=mean_per_user,
                            min_per_user=20, seed=seed)
    user = df["user"].to_numpy() - 1
    item = df["item"].to_numpy() - 1
    del df
    X = csr_from_pairs(user, item, n_users, n_items)
    del user, item
    X.indptr.astype(np.int64).tofile(d / "indptr.i64")
    X.indices.astype(np.int32).tofile(d / "indices.i32")
    meta = {"preset": "ml-20m", "overrides": {"n_users": n_users, "n_items": n_items,
                                               "mean_per_user": mean_per_user, "min_per_user": 20, "seed": seed},
            "history": history_stats(X), "generate_s": round(time.perf_counter() - t, 1)}
    meta_file.write_text(json.dumps(meta, indent=2))
    return meta


def load_mem_prefix(d: Path, n_users: int, n_items: int) -> sp.csr_matrix:
    """The first `n_users` rows of the stored CSR, read straight from the files (nothing else is loaded)."""
    indptr = np.fromfile(d / "indptr.i64", dtype=np.int64, count=n_users + 1)
    indices = np.fromfile(d / "indices.i32", dtype=np.int32, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))


def ml20m_csr(work: Path, seed: int = 0) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """Synthetic ML-20M-shaped interactions, kept as in the paper's preprocessing (rating > 3.5, users with >= 5),
    as a users x items CSR; cached under `work`."""
    from recvae.data import synthetic

    cache = work / f"ml20m-s{seed}.npz"
    meta_file = work / f"ml20m-s{seed}.json"
    if cache.exists() and meta_file.exists():
        return sp.load_npz(cache).tocsr(), json.loads(meta_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    df = synthetic.generate("ml-20m", seed=seed)
    n_ratings = len(df)
    df = df[df["rating"] > 3.5]
    counts = df.groupby("user")["item"].transform("size")
    df = df[counts >= 5]
    users, user = np.unique(df["user"].to_numpy(), return_inverse=True)
    items, item = np.unique(df["item"].to_numpy(), return_inverse=True)
    X = csr_from_pairs(user, item, len(users), len(items))
    X.sort_indices()
    meta = {"preset": "ml-20m", "seed": seed, "ratings": n_ratings, "kept": "rating > 3.5, users with >= 5",
            "history": history_stats(X), "generate_s": round(time.perf_counter() - t, 1)}
    sp.save_npz(cache, X, compressed=False)
    meta_file.write_text(json.dumps(meta, indent=2))
    return X, meta


def vae_recommender(n_items: int, hidden: int, latent: int, seed: int = 0) -> Any:
    """A Mult-VAE recommender with its initial (random, Xavier) weights: scoring cost does not depend on them."""
    import torch

    from recvae.config import ModelConfig
    from recvae.models.neural import MultVAERecommender
    from recvae.models.vae import MultVAE

    torch.manual_seed(seed)
    module = MultVAE(n_items, (hidden,), latent)
    return MultVAERecommender(n_items, ModelConfig(hidden_dims=(hidden,), latent_dim=latent), module=module)


def n_params(rec: Any) -> int:
    return int(sum(p.numel() for p in rec.module.parameters()))


# ---------------------------------------------------------------------------------------------------------------
# workers (child processes)


def worker_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    """One scoring process: load U users' histories, recommend_to_store into SQLite, report memory and time."""
    import torch

    from recvae.serving.recommend import recommend_to_store
    from recvae.serving.store import RecommendationStore

    sampler = RssSampler(cfg["sample_interval"]).start()
    phases: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def mark(name: str) -> None:
        phases.append({"phase": name, "t_s": round(time.perf_counter() - t0, 1),
                       "rss_gib": round(current_rss_gib(), 3), "peak_rss_gib": round(hwm_rss_gib(), 3)})

    mark("imports done")
    U, n_items = cfg["users"], cfg["n_items"]
    X = load_mem_prefix(Path(cfg["data_dir"]), U, n_items)
    user_ids = np.arange(1, U + 1, dtype=np.int64)
    history_mib = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    mark("histories loaded")
    rec = vae_recommender(n_items, cfg["hidden"], cfg["latent"], cfg["seed"])
    mark("model built")
    db = Path(cfg["db_path"])
    for f in db.parent.glob(db.name + "*"):
        f.unlink()
    n_shards = 1 if cfg["score"] == "all" else max(1, round(U / cfg["subset"]))
    store = RecommendationStore(f"sqlite:///{db}")
    t = time.perf_counter()
    summary = recommend_to_store(
        rec, (user_ids, X), store, cfg["top_n"], batch_key=f"mem-{U}-{cfg['chunk_size']}", model_name="bench-multvae",
        chunk_size=cfg["chunk_size"], shard=0, n_shards=n_shards, publish=n_shards == 1,
    )
    wall = time.perf_counter() - t
    mark("scored and written" + (" + published" if n_shards == 1 else " (staging)"))
    store.close()
    sampler.stop()
    db_mb = sum(f.stat().st_size for f in db.parent.glob(db.name + "*")) / 1e6
    if not cfg["keep_db"]:
        for f in db.parent.glob(db.name + "*"):
            f.unlink()
    scored = int(summary.user_count)
    return {
        "users_held": U, "users_scored": scored, "n_shards": n_shards, "rows": int(summary.row_count),
        "status": summary.status, "top_n": cfg["top_n"], "chunk_size": cfg["chunk_size"],
        "model": f"{n_items}-{cfg['hidden']}-{cfg['latent']}-{cfg['hidden']}-{n_items}", "model_params": n_params(rec),
        "history_csr_mib": round(history_mib, 1), "wall_s": round(wall, 1),
        "users_per_s": round(scored / wall, 1), "rows_per_s": round(int(summary.row_count) / wall),
        "peak_rss_gib": round(hwm_rss_gib(), 3), "ru_maxrss_gib": round(peak_rss_gib(), 3),
        "sampled_max_rss_gib": None if sampler.max() is None else round(sampler.max(), 3),
        "torch_threads": torch.get_num_threads(),
        "rss_series": sampler.series(), "phases": phases, "db_mb": round(db_mb, 1), "loadavg_end": loadavg(),
    }


def time_recommend_to_store(rec: Any, user_ids: np.ndarray, X: sp.csr_matrix, url: str, top_n: int,
                            chunk_size: int, key: str) -> dict[str, Any]:
    from recvae.serving.recommend import recommend_to_store
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(url) as store:
        t = time.perf_counter()
        summary = recommend_to_store(rec, (user_ids, X), store, top_n, batch_key=key, model_name="bench-multvae",
                                     chunk_size=chunk_size)
        wall = time.perf_counter() - t
    return {"users": int(summary.user_count), "rows": int(summary.row_count), "status": summary.status,
            "wall_s": round(wall, 2), "users_per_s": round(summary.user_count / wall, 1),
            "rows_per_s": round(summary.row_count / wall)}


def time_store_write(url: str, user_ids: np.ndarray, item_ids: np.ndarray, items: np.ndarray, scores: np.ndarray,
                     counts: np.ndarray, top_n: int, chunk_size: int, key: str) -> dict[str, Any]:
    """The store side of the job alone: stream precomputed top-N lists (as recommend_to_store hands them over)
    through write_shard, then publish."""
    from recvae.serving.store import RecChunk, RecommendationStore

    def chunks() -> Iterator[RecChunk]:
        for s in range(0, len(user_ids), chunk_size):
            e = s + chunk_size
            yield RecChunk(user_ids[s:e], item_ids[np.maximum(items[s:e], 0)], scores[s:e], counts[s:e])

    with RecommendationStore(url) as store:
        t = time.perf_counter()
        batch = store.begin_batch(key, model_name="bench-multvae", top_n=top_n, n_items=len(item_ids))
        t_write = time.perf_counter()
        written = store.write_shard(batch, chunks(), expected_rows=int(counts.sum()))
        write_s = time.perf_counter() - t_write
        t_pub = time.perf_counter()
        summary = store.publish(batch)
        publish_s = time.perf_counter() - t_pub
        total = time.perf_counter() - t
    return {"users": written["users"], "rows": written["rows"], "status": summary.status,
            "write_s": round(write_s, 2), "publish_s": round(publish_s, 2), "total_s": round(total, 2),
            "rows_per_s": round(written["rows"] / total), "users_per_s": round(written["users"] / total, 1)}


def worker_throughput(cfg: dict[str, Any]) -> dict[str, Any]:
    """ML-20M shape: scoring alone, store writes (SQLite, PostgreSQL), end to end on a subset, implicit ALS."""
    import torch

    from recvae.serving.recommend import _as_text, iter_topn

    out: dict[str, Any] = {"loadavg_start": loadavg()}
    work = Path(cfg["work"])
    X, data_meta = ml20m_csr(work, cfg["seed"])
    if cfg["users"]:
        X = X[: cfg["users"]]
    n, n_items = X.shape
    out["data"] = {**data_meta, "history_used": history_stats(X)}
    print(f"  ML-20M-shaped data: {n:,} users x {n_items:,} items, {X.nnz:,} interactions", flush=True)
    top_n, chunk = cfg["top_n"], cfg["chunk_size"]
    rec = vae_recommender(n_items, cfg["hidden"], cfg["latent"], cfg["seed"])
    out["model"] = {"layers": f"{n_items}-{cfg['hidden']}-{cfg['latent']}-{cfg['hidden']}-{n_items}",
                    "hidden": cfg["hidden"], "latent": cfg["latent"],
                    "params": n_params(rec), "weights": "random (Xavier init)",
                    "torch_threads": torch.get_num_threads()}

    # 1. scoring alone: iter_topn (forward, seen items masked, top-N), results kept for the store runs
    items = np.empty((n, top_n), np.int32)
    scores = np.empty((n, top_n), np.float32)
    counts = np.empty(n, np.int64)
    t = time.perf_counter()
    for tn in iter_topn(rec, X, top_n, chunk_size=chunk):
        items[tn.rows], scores[tn.rows], counts[tn.rows] = tn.items, tn.scores, tn.counts
    wall = time.perf_counter() - t
    out["scoring_alone"] = {"users": n, "rows": int(counts.sum()), "wall_s": round(wall, 1),
                            "users_per_s": round(n / wall, 1), "chunk_size": chunk, "loadavg_end": loadavg()}
    print(f"  iter_topn alone: {n / wall:,.0f} users/s ({wall:.0f} s)", flush=True)

    user_ids = _as_text(np.arange(1, n + 1))
    item_ids = _as_text(np.arange(1, n_items + 1))
    e2e_n = min(cfg["e2e_users"], n) if cfg["e2e_users"] else n
    e2e_rows = np.linspace(0, n - 1, e2e_n).round().astype(np.int64)  # spread over all users
    # Each measurement gets a new, empty database.
    stores: dict[str, Any] = {}
    server = None
    if "postgresql" in cfg["dbs"]:
        sys.path.insert(0, str(REPO / "tests"))
        import pgserver  # the tests' throwaway-server helpers

        initdb, pg_ctl = pgserver._find_bin("initdb"), pgserver._find_bin("pg_ctl")
        if initdb and pg_ctl:
            server = pgserver._Server(initdb, pg_ctl)
            server.start()
        else:
            stores["postgresql"] = {"skipped": "initdb/pg_ctl not found"}

    def fresh_db(name: str, label: str) -> tuple[str, Callable[[], float]]:
        """URL of a new empty database for one measurement, and a function giving its size in MB."""
        if name == "sqlite":
            path = work / f"tp-{label}.db"
            for f in work.glob(path.name + "*"):
                f.unlink()
            return f"sqlite:///{path}", lambda: sum(f.stat().st_size for f in work.glob(path.name + "*")) / 1e6
        import psycopg

        admin = server.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "bench_{label}"')
        url = server.url.rsplit("/", 1)[0] + f"/bench_{label}"

        def size() -> float:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e6

        return url, size

    try:
        for name in ("sqlite", "postgresql"):
            if name not in cfg["dbs"] or name in stores:
                continue
            res: dict[str, Any] = {}
            url, size = fresh_db(name, "write")
            res["write_publish"] = time_store_write(url, user_ids, item_ids, items, scores, counts, top_n, chunk,
                                                    key=f"write-{name}")
            res["write_publish"]["db_mb"] = round(size(), 1)
            w = res["write_publish"]
            print(f"  {name}: write + publish {w['rows']:,} rows at {w['rows_per_s']:,} rows/s", flush=True)
            url, size = fresh_db(name, "e2e")
            res["end_to_end"] = time_recommend_to_store(rec, user_ids[e2e_rows], X[e2e_rows], url, top_n, chunk,
                                                        key=f"e2e-{name}")
            e = res["end_to_end"]
            print(f"  {name}: recommend_to_store {e['users']:,} users at {e['users_per_s']:,} users/s", flush=True)
            if name == "postgresql":
                import psycopg

                with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                    res["server_version"] = conn.execute("SHOW server_version").fetchone()[0]
                res["server_settings"] = "fsync=off, full_page_writes=off (tests/pgserver.py)"
            res["loadavg_end"] = loadavg()
            stores[name] = res
    finally:
        if server is not None:
            server.stop()
        for f in work.glob("tp-*.db*"):
            f.unlink()
    out["stores"] = stores
    out["e2e_users"] = e2e_n
    del items, scores

    # 2. implicit ALS: recommend() for the same users and N (factors fitted briefly; cost does not depend on values)
    from recvae.models.baselines import ALS

    als_rows = []
    for factors in cfg["als_factors"]:
        t = time.perf_counter()
        als = ALS(factors=factors, iterations=cfg["als_iterations"], regularization=0.01, alpha=1.0).fit(X)
        fit_s = time.perf_counter() - t
        model = als._model
        userids = np.arange(n)
        t = time.perf_counter()
        ids, _ = model.recommend(userids, X, N=top_n, filter_already_liked_items=True)
        rec_s = time.perf_counter() - t
        row = {"factors": factors, "fit_iterations": cfg["als_iterations"], "fit_s": round(fit_s, 1),
               "users": n, "recommend_s": round(rec_s, 1), "users_per_s": round(n / rec_s, 1),
               "num_threads": model.num_threads or os.cpu_count()}
        # recalculate_user=True: factors solved from each user's row, the fold-in that Mult-VAE's encoder does
        m = min(n, cfg["als_recalc_users"])
        sub = np.linspace(0, n - 1, m).round().astype(np.int64)
        t = time.perf_counter()
        model.recommend(np.arange(m), X[sub], N=top_n, filter_already_liked_items=True, recalculate_user=True)
        rc_s = time.perf_counter() - t
        row.update({"recalc_users": m, "recalc_s": round(rc_s, 1), "recalc_users_per_s": round(m / rc_s, 1)})
        row["loadavg_end"] = loadavg()
        als_rows.append(row)
        print(f"  ALS {factors} factors: recommend {n / rec_s:,.0f} users/s, with recalculate_user "
              f"{m / rc_s:,.0f} users/s (fit {fit_s:.0f} s)", flush=True)
        del als, model, ids
    out["als"] = als_rows
    out["peak_rss_gib"] = round(hwm_rss_gib(), 2)
    out["loadavg_end"] = loadavg()
    return out


def worker_breakdown(cfg: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds per user of each step iter_topn and MultVAERecommender.scores take on one chunk."""
    import torch

    from recvae.models.sparse import CSRBatch

    rng = np.random.default_rng(0)
    rows = []
    c = cfg["chunk_size"]
    for n_items in cfg["items"]:
        lengths = rng.integers(20, 50, c)
        indptr = np.r_[0, np.cumsum(lengths)]
        indices = np.concatenate([np.sort(rng.choice(n_items, k, replace=False)) for k in lengths]).astype(np.int32)
        X = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(c, n_items))
        rec = vae_recommender(n_items, cfg["hidden"], cfg["latent"])
        module = rec.module.eval()

        def timed(f: Callable[[], Any], reps: int = cfg["reps"]) -> float:
            f()
            t = time.perf_counter()
            for _ in range(reps):
                f()
            return (time.perf_counter() - t) / reps / c * 1000

        with torch.no_grad():
            batch = CSRBatch.from_scipy(X)
            z = module.encode(batch)[0]
            logits = module.decode(z)
            steps = {
                "encode (sparse first layer)": timed(lambda: module.encode(CSRBatch.from_scipy(X))),
                "decode (latent -> hidden -> items)": timed(lambda: module.decode(z)),
                "torch.cat of the one batch (scores)": timed(lambda: torch.cat([logits])),
                "copy (.to(copy=True), iter_topn)": timed(lambda: logits.to(dtype=torch.float32, copy=True)),
                "torch.isnan(s).any()": timed(lambda: torch.isnan(logits).any()),
                f"topk {cfg['top_n']}": timed(lambda: torch.topk(logits, cfg["top_n"], dim=1)),
            }
        rows.append({"n_items": n_items, "chunk_size": c, "ms_per_user": {k: round(v, 4) for k, v in steps.items()},
                     "total_ms_per_user": round(sum(steps.values()), 4)})
        print(f"  breakdown {n_items:,} items: {sum(steps.values()):.3f} ms/user", flush=True)
    return {"rows": rows, "loadavg_end": loadavg()}


def worker_generate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Generate (or find cached) the memory part's histories, away from the parent process."""
    return build_mem_data(Path(cfg["work"]), cfg["n_users"], cfg["n_items"], cfg["mean_per_user"], cfg["seed"])


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": worker_generate, "memory": worker_memory, "throughput": worker_throughput,
    "breakdown": worker_breakdown,
}


def run_worker(kind: str, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one worker in a fresh child process and return its JSON result."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"worker-{kind}-{os.getpid()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", kind, "--_config", json.dumps(cfg),
           "--_out", str(out)]
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


# ---------------------------------------------------------------------------------------------------------------
# parts (run in the parent)


def part_memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    users = sorted(int(u) for u in args.mem_users.split(","))
    t = time.perf_counter()
    meta = run_worker("generate", {"work": str(work), "n_users": max(users), "n_items": args.mem_items,
                                   "mean_per_user": args.mem_mean, "seed": args.seed}, work)
    print(f"memory: histories of {max(users):,} users x {args.mem_items:,} items ready "
          f"({meta['history']['interactions']:,} interactions, {time.perf_counter() - t:.0f} s)", flush=True)
    d = mem_data_dir(work, max(users), args.mem_items, args.mem_mean, args.seed)
    runs = []
    chunk_sizes = [int(c) for c in args.mem_chunk_sizes.split(",")]
    plan = [(u, chunk_sizes[0]) for u in users] + [(max(users), c) for c in chunk_sizes[1:]]
    for u, c in plan:
        cfg = {"users": u, "n_items": args.mem_items, "data_dir": str(d), "hidden": args.mem_hidden,
               "latent": args.mem_latent, "seed": args.seed, "top_n": args.mem_top_n, "chunk_size": c,
               "score": args.mem_score, "subset": args.mem_subset, "db_path": str(work / "mem.db"),
               "keep_db": False, "sample_interval": 0.2}
        la = loadavg()
        r = run_worker("memory", cfg, work)
        r["loadavg_start"] = la
        r["parent_ru_maxrss_gib"] = round(peak_rss_gib(), 3)
        runs.append(r)
        print(f"  {u:>9,} users held, {r['users_scored']:,} scored (chunk {c}): peak RSS {r['peak_rss_gib']:.2f} GiB, "
              f"{r['wall_s']:.0f} s, {r['users_per_s']:,.0f} users/s, {r['rows_per_s']:,} rows/s", flush=True)
    return {"data": meta, "score": args.mem_score, "subset": args.mem_subset if args.mem_score == "subset" else None,
            "runs": runs}


def part_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print("throughput: ML-20M shape", flush=True)
    cfg = {"work": str(work), "seed": args.seed, "users": args.tp_users, "hidden": 600, "latent": 200,
           "top_n": args.tp_top_n, "chunk_size": args.tp_chunk_size, "e2e_users": args.tp_e2e_users,
           "dbs": args.tp_dbs.split(","), "als_factors": [int(f) for f in args.als_factors.split(",")],
           "als_iterations": args.als_iterations, "als_recalc_users": args.als_recalc_users}
    return run_worker("throughput", cfg, work)


def part_breakdown(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print("breakdown: per-step cost of one chunk", flush=True)
    cfg = {"items": [20_108, args.mem_items], "chunk_size": 1000, "hidden": 600, "latent": 200, "top_n": 100,
           "reps": 3}
    return run_worker("breakdown", cfg, work)


# ---------------------------------------------------------------------------------------------------------------
# report


def fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)) or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def md_memory(key: str, r: dict[str, Any], sqlite_rows_per_s: float | None) -> list[str]:
    h = r["data"]["history"]
    ov = r["data"]["overrides"]
    runs = r["runs"]
    full = r["score"] == "all"
    title = ("every user scored and published" if full
             else f"the whole input held, {r['subset']:,} users scored (shard 0 of n)")
    lines = [
        f"### Bounded memory, {ov['n_items']:,} items, SQLite: {title}",
        "",
        f"Command: `{r['command']}` ({r['date']}); load average at the start {r['loadavg_start']} on "
        f"{r['machine_cpus']} CPUs.",
        "",
        f"Histories: `synthetic.generate('ml-20m', n_users={ov['n_users']:,}, n_items={ov['n_items']:,}, "
        f"mean_per_user={ov['mean_per_user']:g}, min_per_user=20, seed={ov['seed']})`, all interactions as seen items: "
        f"{h['interactions']:,} for {h['users']:,} users (per user mean {h['per_user_mean']}, median "
        f"{h['per_user_median']:g}, 10-90 % {h['per_user_p10']:g}-{h['per_user_p90']:g}, max {h['per_user_max']:,}), "
        "read as a CSR (indptr, indices), never a dense users x items array. Each row below is a fresh process "
        "running `recommend_to_store(recommender, (user_ids, csr), store, top_n, ...)` into a SQLite file; model "
        f"`{runs[0]['model']}` ({runs[0]['model_params']:,} parameters, random weights).",
        "",
        "| users held | users scored | shards | top-N | chunk | history CSR (MiB) | peak RSS, VmHWM (GiB) | "
        "ru_maxrss (GiB) | max sampled RSS (GiB) | wall (s) | users/s | rows written | rows/s | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in runs:
        lines.append(
            f"| {x['users_held']:,} | {x['users_scored']:,} | {x['n_shards']} | {x['top_n']} | {x['chunk_size']} | "
            f"{x['history_csr_mib']:,.0f} | **{x['peak_rss_gib']:.2f}** | {x['ru_maxrss_gib']:.2f} | "
            f"{fmt(x['sampled_max_rss_gib'], 2)} | "
            f"{x['wall_s']:,.0f} | {x['users_per_s']:,.0f} | {x['rows']:,} | {x['rows_per_s']:,} | {x['status']} |"
        )
    base = [x for x in runs if x["chunk_size"] == runs[0]["chunk_size"]]
    lo, hi = min(base, key=lambda x: x["users_held"]), max(base, key=lambda x: x["users_held"])
    if hi["users_held"] > lo["users_held"]:
        du = hi["users_held"] - lo["users_held"]
        per_user = (hi["peak_rss_gib"] - lo["peak_rss_gib"]) * GIB / du
        csr_per_user = (hi["history_csr_mib"] - lo["history_csr_mib"]) * 2**20 / du
        lines += ["", f"Growth with the users held (chunks of {lo['chunk_size']}): peak RSS +"
                  f"{hi['peak_rss_gib'] - lo['peak_rss_gib']:.2f} GiB from {lo['users_held']:,} to "
                  f"{hi['users_held']:,} users, {per_user:,.0f} bytes per user, i.e. the input, which is "
                  f"O(interactions): the history CSR ({csr_per_user:,.0f} bytes per user) is held twice (the caller's "
                  "matrix and the canonical copy `build_input` makes), plus one Python string per user id. "
                  "The per-chunk part (scores of one chunk, a few copies of chunk x items float32) does not grow."]
    lines += ["", "RSS by phase (GiB, now / peak so far):", ""]
    for x in runs:
        ph = "; ".join(f"{p['phase']} {p['rss_gib']:.2f} / {p['peak_rss_gib']:.2f}" for p in x["phases"])
        lines.append(f"- {x['users_held']:,} users, chunk {x['chunk_size']}: {ph}")
    if not full:
        per_user = [x["wall_s"] / x["users_scored"] for x in runs]
        s_per_user = float(np.median(per_user))
        lines += [
            "",
            f"**Extrapolation (not measured):** at the median {s_per_user * 1000:.2f} ms per scored user seen here "
            f"(scoring + SQLite writes of top-{runs[0]['top_n']}), scoring all {max(x['users_held'] for x in runs):,} "
            f"users with this model would take about {s_per_user * max(x['users_held'] for x in runs) / 60:,.0f} min "
            "on this machine at this load (more if SQLite inserts slow down as the table grows to 100M rows); "
            "memory would not grow with it (chunk after chunk, nothing accumulates: see the RSS samples).",
        ]
    if full and runs[0]["top_n"] < 100:
        n_max = max(x["users_held"] for x in runs)
        cost = ""
        if sqlite_rows_per_s:
            extra_min = n_max * (100 - runs[0]["top_n"]) / sqlite_rows_per_s / 60
            cost = (f" at the {sqlite_rows_per_s:,.0f} rows/s SQLite reached in the throughput part, top-100 "
                    f"({n_max * 100:,} rows) would add about {extra_min:,.0f} min of inserts (more if the B-tree "
                    "outgrows the OS page cache)")
        lines += ["", f"Top-{runs[0]['top_n']} here instead of 100 to keep the run short:{cost}. N does not change "
                  "the process's memory beyond the chunk's N-wide arrays: rows stream into one transaction and "
                  "SQLite's page cache is bounded."]
    else:
        lines += ["", "The subset runs are shard 0 of n of the sharded job: the process holds every user's history, "
                  "ids and expected counts, scores and writes its shard, and leaves the batch in staging (no "
                  "publish: the other shards are not written)."]
    lines += ["", "RSS sampled every 0.2 s (psutil), [seconds, GiB], for the largest run:", "",
              f"`{max(runs, key=lambda x: x['users_held'])['rss_series']}`", ""]
    return lines


def md_throughput(r: dict[str, Any]) -> list[str]:
    h = r["data"]["history_used"]
    m = r["model"]
    s = r["scoring_alone"]
    lines = [
        "### Throughput on ML-20M-shaped data",
        "",
        f"Command: `{r['command']}` ({r['date']}); load average at the start {r['loadavg_start']}, at the end "
        f"{r['loadavg_end']} on {r['machine_cpus']} CPUs. Peak RSS of the process {r['peak_rss_gib']} GiB.",
        "",
        f"Data: `synthetic.generate('ml-20m', seed={r['data']['seed']})` ({r['data']['ratings']:,} ratings), kept "
        f"{r['data']['kept']}: {h['users']:,} users x {h['items']:,} items, {h['interactions']:,} interactions "
        f"(per user mean {h['per_user_mean']}, median {h['per_user_median']:g}). Model: Mult-VAE `{m['layers']}` "
        f"({m['params']:,} parameters, {m['weights']}), torch {m['torch_threads']} threads. Top-{r['top_n']} "
        f"per user, chunks of {s['chunk_size']} users.",
        "",
        "| what | users | rows | wall (s) | users/s | rows/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| Mult-VAE scoring alone (`iter_topn`: forward, seen items masked, top-N; no DB) | {s['users']:,} | "
        f"{s['rows']:,} | {s['wall_s']:,.1f} | **{s['users_per_s']:,.0f}** | {s['rows'] / s['wall_s']:,.0f} |",
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
    lines += [""]
    notes = []
    for name, res in r["stores"].items():
        if "skipped" in res:
            continue
        extra = f", PostgreSQL {res['server_version']} ({res['server_settings']})" if name == "postgresql" else ""
        notes.append(f"{name}: {res['write_publish']['db_mb']:,.0f} MB for the {res['write_publish']['rows']:,} rows"
                     f"{extra}")
    lines += [
        "Notes:",
        f"- Stores: {'; '.join(notes)}. The store-alone rows stream the lists exactly as `recommend_to_store` hands "
        "them over (`RecChunk`: raw ids as text), in one transaction (SQLite `executemany`, PostgreSQL binary "
        "`COPY`), then `publish` checks the row counts and flips the batch. Every measurement writes into a new, "
        "empty database. The end-to-end rows are the whole job on a subset of users spread over all of them: "
        "`build_input` (copies the history into canonical form), `begin_batch`, scoring and writing chunk by chunk "
        "(one thread: scoring and writing take turns), `publish`.",
        f"- ALS: `recvae.models.baselines.ALS` (implicit {r['machine_implicit']} CPU ALS) fitted with "
        f"{r['als'][0]['fit_iterations'] if r['als'] else '-'} iteration(s) only (fit time "
        + ", ".join(f"{a['factors']} factors {a['fit_s']:,.0f} s" for a in r["als"])
        + "): `recommend` cost does not depend on the factor values. implicit uses "
        f"{r['als'][0]['num_threads'] if r['als'] else '-'} threads with OPENBLAS_NUM_THREADS=1. Its `recommend` "
        "returns the top-N ids and scores of every user in memory and writes nothing. Cost per user: Mult-VAE "
        f"encodes the history and decodes {m['latent']} -> {m['hidden']} -> {h['items']:,} items: its last layer is a "
        f"{m['hidden']} x {h['items']:,} product per user, as ALS's with {m['hidden']} factors; "
        "ALS with 200 factors does a third of that product.",
        "",
    ]
    return lines


def md_breakdown(r: dict[str, Any]) -> list[str]:
    rows = r["rows"]
    steps = list(rows[0]["ms_per_user"])
    lines = [
        "### Where the scoring time goes (one chunk, ms per user)",
        "",
        f"Command: `{r['command']}` ({r['date']}); load average {r['loadavg_start']}. Mult-VAE 600-200, chunk of "
        f"{rows[0]['chunk_size']} users, each step timed alone.",
        "",
        "| step | " + " | ".join(f"{x['n_items']:,} items" for x in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for s in steps:
        lines.append(f"| {s} | " + " | ".join(f"{x['ms_per_user'][s]:.3f}" for x in rows) + " |")
    lines.append("| total | " + " | ".join(f"**{x['total_ms_per_user']:.3f}**" for x in rows) + " |")
    lines += ["", "Every step but the two matrix products is a pass over the chunk's scores (memory bound).", ""]
    return lines


def summary(res: dict[str, Any]) -> list[str]:
    """The headline figures of whatever parts are present."""
    out = []
    for key in ("memory_all", "memory_subset"):
        r = res["parts"].get(key)
        if not r:
            continue
        for x in r["runs"]:
            if x["users_held"] == max(y["users_held"] for y in r["runs"]):
                what = "every user scored" if key == "memory_all" else f"{x['users_scored']:,} of them scored"
                out.append(
                    f"- {x['users_held']:,} users x {r['data']['history']['items']:,} items held ({what}), model "
                    f"`{x['model']}`, top-{x['top_n']}, chunks of {x['chunk_size']}: peak RSS "
                    f"**{x['peak_rss_gib']:.2f} GiB**, {x['users_per_s']:,.0f} users/s into SQLite "
                    f"({x['wall_s']:,.0f} s).")
    t = res["parts"].get("throughput")
    if t:
        s = t["scoring_alone"]
        line = f"- ML-20M shape ({s['users']:,} users): Mult-VAE scoring alone **{s['users_per_s']:,.0f} users/s**"
        for name, r in t["stores"].items():
            if "write_publish" in r:
                line += (f"; {name} store alone **{r['write_publish']['rows_per_s']:,} rows/s**, end to end "
                         f"{r['end_to_end']['users_per_s']:,.0f} users/s")
        for a in t["als"]:
            line += f"; implicit ALS {a['factors']} factors `recommend` **{a['users_per_s']:,.0f} users/s**"
        out.append(line + ".")
    return (["## Summary", "", *out, ""] if out else [])


def markdown(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    threads = next((p["model"]["torch_threads"] for p in res["parts"].values() if "model" in p), None)
    threads = threads or next((p["runs"][0]["torch_threads"] for p in res["parts"].values() if "runs" in p), None)
    lines = [
        "# Batch top-N scoring (recommend job): memory and throughput",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('memory_gib')} GiB RAM, {m.get('platform')}; "
        f"Python {m.get('python')}, torch {m.get('torch')} ({threads} threads), numpy "
        f"{m.get('numpy')}, scipy {m.get('scipy')}, implicit {m.get('implicit')}, SQLite {m.get('sqlite')}, "
        f"psutil {m.get('psutil')}, "
        f"OPENBLAS_NUM_THREADS={m.get('OPENBLAS_NUM_THREADS')}. CPU only. The machine was shared with other jobs "
        "while this ran: the load average is given with each part, and timings are lower bounds on what an idle "
        "machine gives.",
        "",
        "Each measurement runs in a fresh child process. Peak RSS is that process's VmHWM (/proc/self/status: the "
        "high-water mark of its own address space); `resource.getrusage(RUSAGE_SELF).ru_maxrss` is shown too, but "
        "on Linux it starts from the spawning parent's peak (the parent here stays small, so the two agree "
        "whenever the child's peak is the larger). psutil samples RSS every 0.2 s in a thread.",
        "",
    ]
    lines += summary(res)
    tp = res["parts"].get("throughput", {}).get("stores", {}).get("sqlite", {})
    sqlite_rate = tp.get("write_publish", {}).get("rows_per_s")
    for key in ("memory_all", "memory_subset"):
        if key in res["parts"]:
            lines += md_memory(key, res["parts"][key], sqlite_rate)
    if "throughput" in res["parts"]:
        lines += md_throughput(res["parts"]["throughput"])
    if "breakdown" in res["parts"]:
        lines += md_breakdown(res["parts"]["breakdown"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--parts", default="memory,throughput,breakdown", help="memory,throughput,breakdown")
    p.add_argument("--workdir", default=str(DEFAULT_WORK), help="scratch folder (cached data, DB files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mem-users", default="100000,300000,1000000", help="user counts held, one process each")
    p.add_argument("--mem-items", type=int, default=50_000)
    p.add_argument("--mem-mean", type=float, default=35.0, help="mean draws per user (min 20) in the generator")
    p.add_argument("--mem-hidden", type=int, default=600)
    p.add_argument("--mem-latent", type=int, default=200)
    p.add_argument("--mem-top-n", type=int, default=100)
    p.add_argument("--mem-chunk-sizes", default="1000,2000",
                   help="first: for every user count; others: one more run each at the largest user count")
    p.add_argument("--mem-score", choices=("subset", "all"), default="subset")
    p.add_argument("--mem-subset", type=int, default=10_000, help="users scored per run with --mem-score subset")
    p.add_argument("--tp-users", type=int, default=0, help="first N users of the ML-20M shape (0: all)")
    p.add_argument("--tp-top-n", type=int, default=100)
    p.add_argument("--tp-chunk-size", type=int, default=1000)
    p.add_argument("--tp-e2e-users", type=int, default=10_000, help="users for recommend_to_store end to end (0: all)")
    p.add_argument("--tp-dbs", default="sqlite,postgresql")
    p.add_argument("--als-factors", default="200,600")
    p.add_argument("--als-iterations", type=int, default=1)
    p.add_argument("--als-recalc-users", type=int, default=10_000)
    p.add_argument("--results-dir", default=str(RESULTS), help="where recommend.json/.md go (default bench/results)")
    p.add_argument("--render-only", action="store_true", help="rewrite recommend.md from recommend.json; run nothing")
    p.add_argument("--_worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--_config", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recvae.log import setup_logging

    setup_logging("WARNING")
    if args._worker:
        result = WORKERS[args._worker](json.loads(args._config))
        Path(args._out).write_text(json.dumps(result))
        return 0

    results = Path(args.results_dir)
    res_file = results / "recommend.json"
    if args.render_only:
        (results / "recommend.md").write_text(markdown(json.loads(res_file.read_text())))
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python", "bench/bench_recommend.py", *map(shlex.quote, sys.argv[1:])])
    mach = machine()
    res: dict[str, Any] = json.loads(res_file.read_text()) if res_file.exists() else {"parts": {}}
    res["machine"] = mach
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"memory", "throughput", "breakdown"}
    if unknown:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}; parts: memory, throughput, breakdown")
    runners = {"memory": part_memory, "throughput": part_throughput, "breakdown": part_breakdown}
    t_all = time.perf_counter()
    for part in parts:
        stamp = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "loadavg_start": loadavg(), "machine_cpus": mach["cpus"], "machine_implicit": mach["implicit"],
                 "top_n": args.tp_top_n}
        t = time.perf_counter()
        out = runners[part](args, work)
        out = {**out, **{k: v for k, v in stamp.items() if k not in out or k == "loadavg_start"},
               "loadavg_start": stamp["loadavg_start"], "part_wall_s": round(time.perf_counter() - t, 1)}
        key = f"memory_{args.mem_score}" if part == "memory" else part
        res["parts"][key] = out
        print(f"{part}: {out['part_wall_s']:.0f} s", flush=True)
        results.mkdir(parents=True, exist_ok=True)
        res_file.write_text(json.dumps(res, indent=2) + "\n")
        (results / "recommend.md").write_text(markdown(res))
    print(f"total {time.perf_counter() - t_all:.0f} s; wrote {res_file} and recommend.md", flush=True)
    for f in work.glob("*.db*"):
        f.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
