"""Our side of the peer comparison, run in the project venv (/work/main/.venv).

`train`: recvae.train.train on the exported snapshot, then the test users' fold-in rows scored through the
Recommender contract (`scores`). `scoring`: batch top-N users/s of ours against `implicit` ALS
`recommend(userids, user_items, N, filter_already_liked_items=True)` on the same users.
Writes the same result.json / scores.npy as the peer scripts (see peer_common.py).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

logger = logging.getLogger(__name__)
SCORE_BATCH = 2_000


def _config(args: Any):
    """The project Config with the benchmark's shared hyperparameters."""
    from recvae.config import Config, apply_overrides

    return apply_overrides(
        Config(),
        {
            "model.kind": "vae",
            "model.hidden_dims": [args.hidden],
            "model.latent_dim": args.latent,
            "model.activation": "tanh",
            "model.dropout": args.dropout,
            "train.epochs": args.epochs,
            "train.batch_size": args.batch_size,
            "train.lr": args.lr,
            "train.beta_schedule": "anneal",
            "train.anneal_cap": args.anneal_cap,
            "train.total_anneal_steps": args.total_anneal_steps,
            "train.seed": args.seed,
            "train.device": "cpu",
            "train.num_threads": args.threads,
        },
    ).validate()


def train_task(args: Any) -> None:
    """Train ours, write per-epoch times and the test users' scores."""
    import recvae
    from recvae.snapshot import Snapshot
    from recvae.train import train

    t0 = time.perf_counter()
    snapshot = Snapshot.load(args.data, verify=False)
    config = _config(args)
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    select_on = None if args.select_on == "none" else args.select_on
    result = train(snapshot, config, args.out / "run", select_on=select_on)
    fit_s = time.perf_counter() - t1
    rec = result.recommender
    rec.save(args.out / "model", snapshot_id=snapshot.snapshot_id)

    test_tr, _ = snapshot.heldout("test")
    writer = pc.ScoreWriter(args.out, args.output, test_tr.shape[0], snapshot.n_items, args.topk)
    t2 = time.perf_counter()
    for start in range(0, test_tr.shape[0], SCORE_BATCH):
        block = test_tr[start : start + SCORE_BATCH]
        writer.add(rec.scores(block).numpy(), block)
    score_s = time.perf_counter() - t2
    notes = ["scored through the Recommender contract: rec.scores(fold-in rows), the mean of q(z|x) decoded"]
    if select_on is None:
        notes.append("weights of the last epoch (no epoch selection), as for the peers")
    else:
        notes.append(f"weights of the best epoch on {select_on} NDCG@100 (epoch {result.best_epoch}); per-epoch eval excluded from epoch times")
    pc.write_result(
        args.out,
        {
            "system": "ours",
            "library": f"recvae {getattr(recvae, '__version__', '')} MultVAE".replace("  ", " "),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "epoch_times_s": [float(h["epoch_time_s"]) for h in result.history],
            "setup_s": setup_s,
            "fit_s": fit_s,
            "score_s": score_s,
            "n_test_users": int(test_tr.shape[0]),
            "output": writer.close(),
            "best_epoch": result.best_epoch,
            "foldin": "encoder on fold-in rows (Recommender.scores)",
            "notes": notes,
        },
    )


def _ours_topn(rec: Any, X: sp.csr_matrix, n: int) -> np.ndarray:
    """Top-n unseen items per row of X with our batch scorer (recvae.recommend.iter_topn)."""
    from recvae.recommend import iter_topn

    return np.concatenate([t.items for t in iter_topn(rec, X, n, chunk_size=SCORE_BATCH)])


def _timed(fn, repeat: int) -> tuple[float, Any]:
    """Best wall seconds of `repeat` calls, and the last call's value."""
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def scoring_task(args: Any) -> None:
    """Users/s of ours vs implicit ALS recommend (N=args.topk, seen items filtered) on the same users."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recvae.recommender import load_recommender
    from recvae.snapshot import Snapshot

    torch.set_num_threads(args.threads)
    snapshot = Snapshot.load(args.data, verify=False)
    rec = load_recommender(args.model)
    train = snapshot.train.tocsr()
    test_tr, _ = snapshot.heldout("test")
    rng = np.random.default_rng(args.seed)
    n_train = min(args.scoring_users, train.shape[0])
    train_ids = np.sort(rng.choice(train.shape[0], n_train, replace=False))
    train_rows = train[train_ids]
    n = args.topk

    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=args.als_factors, iterations=args.als_iterations, regularization=0.01,
            random_state=args.seed, dtype=np.float32, num_threads=args.threads,
        )
        t = time.perf_counter()
        als.fit(train, show_progress=False)
        als_fit_s = time.perf_counter() - t
        rows: list[dict[str, Any]] = []
        for users, X, ids, recalc in (
            ("train users (stored ALS factors)", train_rows, train_ids, False),
            ("test users, fold-in (ALS recalculate_user=True)", test_tr, np.arange(test_tr.shape[0]), True),
        ):
            als_s, _ = _timed(lambda: als.recommend(ids, X, N=n, filter_already_liked_items=True,
                                                   recalculate_user=recalc), args.repeat)
            ours_s, _ = _timed(lambda: _ours_topn(rec, X, n), args.repeat)
            rows.append({
                "users": users, "n_users": int(X.shape[0]), "N": n,
                "als_s": als_s, "als_users_per_s": X.shape[0] / als_s,
                "ours_s": ours_s, "ours_users_per_s": X.shape[0] / ours_s,
            })
    ours_path = f"recvae.recommend.iter_topn, chunks of {SCORE_BATCH} users"
    pc.write_result(
        args.out,
        {
            "system": "scoring",
            "implicit_als": {"factors": args.als_factors, "iterations": args.als_iterations, "fit_s": als_fit_s},
            "ours_path": ours_path,
            "threads": args.threads,
            "repeat": args.repeat,
            "rows": rows,
        },
    )


def main() -> None:
    p = pc.parser(__doc__)
    p.add_argument("--task", choices=("train", "scoring"), default="train")
    p.add_argument("--select-on", choices=("none", "validation"), default="none")
    p.add_argument("--model", type=Path, help="scoring: a saved recommender directory")
    p.add_argument("--scoring-users", type=int, default=10_000)
    p.add_argument("--als-factors", type=int, default=200)
    p.add_argument("--als-iterations", type=int, default=15)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.task == "train":
        train_task(args)
    else:
        scoring_task(args)


if __name__ == "__main__":
    main()
