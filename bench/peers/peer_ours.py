"""Our side of the peer comparison, run in the project venv (/work/main/.venv).

`train`: recvae.training.loop.train on the exported snapshot, then the test users' fold-in rows scored through the
Recommender contract (`scores`). `--amp bf16` trains (and scores) with train.amp=bf16, CPU autocast to bfloat16.
`scoring`: batch top-N users/s of one or more of our saved models (`--model NAME=DIR`, repeatable) against
`implicit` ALS `recommend(userids, user_items, N, filter_already_liked_items=True)` on the same users.
`profile`: where an epoch's time goes: recvae.training.loop.fit_model under torch.profiler (1 warm-up epoch, then
PROFILE_EPOCHS profiled ones), aten ops' self CPU time grouped into categories (ours_profile.py).
Writes the same result.json / scores.npy as the peer scripts (see peer_common.py).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import harness  # noqa: E402  (bench/harness.py: puts this checkout's recvae first on sys.path)
import peer_common as pc  # noqa: E402
from ours_profile import PROFILE_EPOCHS, PROFILE_WARMUP_EPOCHS, profile_task  # noqa: E402

logger = logging.getLogger(__name__)
SCORE_BATCH = 2_000
AMP_NOTE = ("trains and scores with bf16 autocast (train.amp=bf16): the dense matmuls run in bfloat16; "
            "the weights, the log-softmax likelihood (logits cast back to float32) and the fused Adam update stay "
            "float32")


def _config(args: Any):
    """The project Config with the benchmark's shared hyperparameters."""
    from recvae.config import Config, apply_overrides

    config = apply_overrides(
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
            "train.amp": args.amp,
            "train.compile": args.compile,
        },
    )
    return apply_overrides(config, args.overrides).validate()  # --set, after the shared settings


def train_task(args: Any) -> None:
    """Train ours, write per-epoch times and the test users' scores."""
    import recvae
    from recvae.data.snapshot import Snapshot
    from recvae.training import fit_model

    t0 = time.perf_counter()
    snapshot = Snapshot.load(args.data, verify=False)
    config = _config(args)
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    select_on = None if args.select_on == "none" else args.select_on
    # no per-epoch checkpoint files (out_dir=None), as the peers write none: the same work is timed
    validation = snapshot.heldout(select_on) if select_on is not None else None
    result = fit_model(snapshot.train, validation, config, None, snapshot_id=snapshot.snapshot_id, select_on=select_on)
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
    notes = ["scored through the Recommender contract: rec.scores(fold-in rows), the mean of q(z|x) decoded",
             "trained by recvae.training.loop.fit_model without per-epoch checkpoint files (the product's "
             "`recvae train` writes best.pt and last.pt after every epoch), as the peers write none"]
    if args.amp != "none":
        notes.insert(0, AMP_NOTE if args.amp == "bf16" else f"train.amp={args.amp}")
    if args.compile:
        notes.insert(0, "train.compile=true: the forward pass and the likelihood go through torch.compile "
                        "(dynamic shapes); the first epoch includes the compilation")
    if select_on is None:
        notes.append("weights of the last epoch (no epoch selection), as for the peers")
    else:
        notes.append(f"weights of the best epoch on {select_on} NDCG@100 (epoch {result.best_epoch}); per-epoch eval "
                     "excluded from epoch times")
    pc.write_result(
        args.out,
        {
            "system": ("ours" if args.amp == "none" else f"ours-{args.amp}") + ("-compile" if args.compile else ""),
            "library": f"recvae {getattr(recvae, '__version__', '')} MultVAE".replace("  ", " "),
            "amp": args.amp,
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
    """Top-n unseen items per row of X with our batch scorer (recvae.serving.recommend.iter_topn)."""
    from recvae.serving.recommend import iter_topn

    return np.concatenate([t.items for t in iter_topn(rec, X, n, chunk_size=SCORE_BATCH)])


def _models(specs: list[str]) -> dict[str, Path]:
    """`--model NAME=DIR` (or a bare DIR, named `ours`) -> {name: dir}, in the order given."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "ours", spec
        if name in out:
            raise SystemExit(f"--model {spec}: {name!r} given twice")
        out[name] = Path(path)
    if not out:
        raise SystemExit("--task scoring needs at least one --model [NAME=]DIR")
    return out


def _scoring_row(als: Any, recs: dict[str, Any], users: str, X: sp.csr_matrix, ids: np.ndarray, recalc: bool,
                 n: int, repeat: int) -> dict[str, Any]:
    """Best-of-`repeat` seconds of ALS recommend and of each of our models on the same rows X."""
    def als_recommend() -> Any:
        return als.recommend(ids, X, N=n, filter_already_liked_items=True, recalculate_user=recalc)

    als_s, _ = harness.best_of(als_recommend, repeat)
    row: dict[str, Any] = {"users": users, "n_users": int(X.shape[0]), "N": n,
                           "als_s": als_s, "als_users_per_s": X.shape[0] / als_s, "models": {}}
    for name, rec in recs.items():
        s, _ = harness.best_of(functools.partial(_ours_topn, rec, X, n), repeat)
        row["models"][name] = {"s": s, "users_per_s": X.shape[0] / s}
    return row


def scoring_task(args: Any) -> None:
    """Users/s of each of our models vs implicit ALS recommend (N=args.topk, seen items filtered) on the same users."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recvae.data.snapshot import Snapshot
    from recvae.models.base import load_recommender

    torch.set_num_threads(args.threads)
    snapshot = Snapshot.load(args.data, verify=False)
    recs = {name: load_recommender(path) for name, path in _models(args.model).items()}
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
        with harness.Timer() as t:
            als.fit(train, show_progress=False)
        rows = [_scoring_row(als, recs, users, X, ids, recalc, n, args.repeat) for users, X, ids, recalc in (
            ("train users (stored ALS factors)", train_rows, train_ids, False),
            ("test users, fold-in (ALS recalculate_user=True)", test_tr, np.arange(test_tr.shape[0]), True),
        )]
    ours_path = f"recvae.serving.recommend.iter_topn, chunks of {SCORE_BATCH} users"
    pc.write_result(
        args.out,
        {
            "system": "scoring",
            "implicit_als": {"factors": args.als_factors, "iterations": args.als_iterations, "fit_s": t.seconds},
            "ours_path": ours_path,
            # MultVAERecommender carries train_config; the Recommender contract does not promise it
            "models": {name: {"path": str(path), "amp": recs[name].train_config.amp}  # type: ignore[attr-defined]
                       for name, path in _models(args.model).items()},
            "threads": args.threads,
            "repeat": args.repeat,
            "rows": rows,
        },
    )


def main() -> None:
    """Run one task (train, scoring or profile) with the shared settings; result.json in --out."""
    p = pc.parser(__doc__)
    p.add_argument("--task", choices=("train", "scoring", "profile"), default="train")
    p.add_argument("--select-on", choices=("none", "validation"), default="none")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="train.amp: none (float32) or bf16 (CPU autocast)")
    p.add_argument("--compile", action="store_true",
                   help="train.compile: torch.compile the forward pass and likelihood")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="train/profile: override the shared settings of ours (run.py --ours-set)")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                   help="scoring: a saved recommender directory, repeatable (a bare DIR is named 'ours')")
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
    elif args.task == "profile":
        args.epochs = PROFILE_WARMUP_EPOCHS + PROFILE_EPOCHS
        profile_task(args, _config(args))
    else:
        scoring_task(args)


if __name__ == "__main__":
    main()
