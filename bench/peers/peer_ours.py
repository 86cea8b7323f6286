"""Our side of the peer comparison, run in the project venv (/work/main/.venv).

`train`: recvae.training.loop.train on the exported snapshot, then the test users' fold-in rows scored through the
Recommender contract (`scores`). `--amp bf16` trains (and scores) with train.amp=bf16, CPU autocast to bfloat16.
`scoring`: batch top-N users/s of one or more of our saved models (`--model NAME=DIR`, repeatable) against
`implicit` ALS `recommend(userids, user_items, N, filter_already_liked_items=True)` on the same users.
`profile`: where an epoch's time goes: recvae.training.loop.fit_model under torch.profiler (1 warm-up epoch, then
PROFILE_EPOCHS profiled ones), aten ops' self CPU time grouped into categories (see `classify`).
Writes the same result.json / scores.npy as the peer scripts (see peer_common.py).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

logger = logging.getLogger(__name__)
SCORE_BATCH = 2_000
PROFILE_WARMUP_EPOCHS = 1
PROFILE_EPOCHS = 2
AMP_NOTE = ("trains and scores with bf16 autocast (train.amp=bf16): the dense matmuls run in bfloat16; "
            "the weights, the log-softmax likelihood (logits cast back to float32) and the fused Adam update stay float32")


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
             "trained by recvae.training.loop.fit_model without per-epoch checkpoint files (the product's `recvae train` "
             "writes best.pt and last.pt after every epoch), as the peers write none"]
    if args.amp != "none":
        notes.insert(0, AMP_NOTE if args.amp == "bf16" else f"train.amp={args.amp}")
    if args.compile:
        notes.insert(0, "train.compile=true: the forward pass and the likelihood go through torch.compile "
                        "(dynamic shapes); the first epoch includes the compilation")
    if select_on is None:
        notes.append("weights of the last epoch (no epoch selection), as for the peers")
    else:
        notes.append(f"weights of the best epoch on {select_on} NDCG@100 (epoch {result.best_epoch}); per-epoch eval excluded from epoch times")
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


def _timed(fn, repeat: int) -> tuple[float, Any]:
    """Best wall seconds of `repeat` calls, and the last call's value."""
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


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
            row: dict[str, Any] = {"users": users, "n_users": int(X.shape[0]), "N": n,
                                   "als_s": als_s, "als_users_per_s": X.shape[0] / als_s, "models": {}}
            for name, rec in recs.items():
                s, _ = _timed(lambda: _ours_topn(rec, X, n), args.repeat)
                row["models"][name] = {"s": s, "users_per_s": X.shape[0] / s}
            rows.append(row)
    ours_path = f"recvae.serving.recommend.iter_topn, chunks of {SCORE_BATCH} users"
    pc.write_result(
        args.out,
        {
            "system": "scoring",
            "implicit_als": {"factors": args.als_factors, "iterations": args.als_iterations, "fit_s": als_fit_s},
            "ours_path": ours_path,
            "models": {name: {"path": str(path), "amp": recs[name].train_config.amp}
                       for name, path in _models(args.model).items()},
            "threads": args.threads,
            "repeat": args.repeat,
            "rows": rows,
        },
    )


# ------------------------------------------------------------------------------------------------ profile

# Categories of the profile, in report order. How an op is classified (see `classify`):
#  1. scopes: the op runs inside a record_function scope that `_scoped` wraps around a library function for
#     the profile only (the training loop itself is recvae.training.loop.fit_model, unchanged), or inside the optimizer's
#     own "Optimizer.step#..." / "Optimizer.zero_grad#..." scope;
#  2. backward: an autograd node ("autograd::engine::evaluate_function: XBackward0") takes the scope of the
#     forward op that created it, matched by the autograd sequence number;
#  3. names, for the rest: the nearest enclosing aten::to / _to_copy (casts) or mm / addmm / bmm / matmul /
#     linear (dense matmuls), then a plain copy_ / clone (casts/copies), randperm (data batching), else other.
CATEGORIES = (
    "dense matmuls",
    "sparse first layer",
    "log-softmax likelihood",
    "optimizer",
    "data batching",
    "casts/copies",
    "other aten ops",
    "outside aten ops (Python)",
)
SCOPES = {  # record_function name -> category
    "bench::data_batching": "data batching",  # recvae.models.sparse.SparseRows.batch
    "bench::sparse_first_layer": "sparse first layer",  # normalized_dropout (L2 norm, index_add_) + SparseLinear (embedding_bag)
    "bench::likelihood": "log-softmax likelihood",  # MultVAE.nll (multinomial_nll): logsumexp, picked logits, sub
}
DENSE_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::addmv", "aten::mv"}
CAST_OPS = {"aten::to", "aten::_to_copy"}
COPY_OPS = {"aten::copy_", "aten::clone"}
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def _scoped(fn: Any, name: str) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        with torch.profiler.record_function(name):
            return fn(*a, **k)
    return wrapper


@contextlib.contextmanager
def _profile_scopes():
    """record_function scopes around the library functions whose ops are otherwise ambiguous by name (index, sub...).

    Wrappers only: each calls the original function unchanged, and everything is restored on exit.
    """
    import recvae.models.sparse as sparse
    import recvae.models.vae as vae

    patches = [
        (sparse.SparseRows, "batch", "bench::data_batching"),
        (vae, "normalized_dropout", "bench::sparse_first_layer"),  # as MultVAE's encoder calls it
        (sparse.SparseLinear, "forward", "bench::sparse_first_layer"),
        (vae.LatentAutoencoder, "nll", "bench::likelihood"),  # training reads the likelihood from this staticmethod
    ]
    saved = [(obj, attr, inspect.getattr_static(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, name in patches:
            wrapped = _scoped(getattr(obj, attr), name)
            static = isinstance(inspect.getattr_static(obj, attr), staticmethod)
            setattr(obj, attr, staticmethod(wrapped) if static else wrapped)
        yield
    finally:
        for obj, attr, fn in saved:
            setattr(obj, attr, fn)


def _scope_of(e: Any, fwd_scope: dict[int, str]) -> tuple[str | None, list[Any]]:
    """The category that a scope enclosing event `e` imposes (or None), and the chain of events below that scope."""
    chain = []
    x = e
    while x is not None and not x.name.startswith("ProfilerStep"):
        if x.name.startswith("Optimizer."):
            return "optimizer", chain
        if x.name in SCOPES:
            return SCOPES[x.name], chain
        if x.name.startswith(BACKWARD_PREFIX) and x.sequence_nr in fwd_scope:
            return fwd_scope[x.sequence_nr], chain
        chain.append(x)
        x = x.cpu_parent
    return None, chain


def _in_backward(e: Any) -> bool:
    x = e.cpu_parent
    while x is not None:
        if x.name.startswith(BACKWARD_PREFIX):
            return True
        x = x.cpu_parent
    return False


def classify(e: Any, fwd_scope: dict[int, str]) -> str:
    """The category of event `e`'s self time (see CATEGORIES)."""
    if e.name.startswith("ProfilerStep"):
        return "outside aten ops (Python)"
    scope, chain = _scope_of(e, fwd_scope)
    if scope is not None:
        return scope
    for x in chain:
        if x.name in CAST_OPS:
            return "casts/copies"
        if x.name in DENSE_OPS:
            return "dense matmuls"
    if e.name in COPY_OPS:
        return "casts/copies"
    if e.name == "aten::randperm":
        return "data batching"
    return "other aten ops"


def profile_breakdown(events: Any) -> dict[str, Any]:
    """Self CPU time of every event inside the ProfilerStep windows, summed by category."""
    steps = [e for e in events if e.name.startswith("ProfilerStep")]
    if not steps:
        raise RuntimeError("the profile holds no ProfilerStep window")

    def in_step(e: Any) -> bool:
        x = e
        while x is not None:
            if x.name.startswith("ProfilerStep"):
                return True
            x = x.cpu_parent
        return False

    inside = sorted((e for e in events if in_step(e)), key=lambda e: e.time_range.start)
    # The backward node numbered N was created by a forward op that recorded N. Every op run with grad enabled
    # records the counter's current value, node-creating or not (the data batching's index ops too), and only
    # creating a node moves it on: so node N's creator is the LAST op, in start order, that recorded N.
    last_scope: dict[int, str | None] = {}
    for e in inside:
        if e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_PREFIX) and not _in_backward(e):
            last_scope[e.sequence_nr] = _scope_of(e, {})[0]
    fwd_scope = {k: v for k, v in last_scope.items() if v is not None and v != "optimizer"}
    us: dict[str, float] = defaultdict(float)
    ops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in inside:
        cat = classify(e, fwd_scope)
        us[cat] += e.self_cpu_time_total
        ops[cat][e.name] += e.self_cpu_time_total
    wall_us = sum(e.cpu_time_total for e in steps)
    n = len(steps)
    return {
        "profiled_epochs": n,
        "epoch_wall_s": wall_us / n / 1e6,
        "outside_windows_events": len(events) - len(inside),
        "categories": {c: {"s_per_epoch": us.get(c, 0.0) / n / 1e6, "share": us.get(c, 0.0) / wall_us} for c in CATEGORIES},
        # the biggest ops of each category (self time, s per epoch): to check the classification by eye
        "top_ops": {c: {k: v / n / 1e6 for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:6]} for c, d in ops.items()},
    }


def profile_task(args: Any) -> None:
    """fit_model under torch.profiler: PROFILE_WARMUP_EPOCHS unrecorded, then PROFILE_EPOCHS recorded epochs.

    One fit of warm-up + profiled epochs; the profiler's schedule (one step per epoch, stepped by fit_model's
    on_epoch_end callback) records only the later epochs, so module construction, the first epoch and the
    final weight copy are not in the windows. A window runs from the end of one epoch to the end of the next:
    the training loop plus fit_model's per-epoch bookkeeping (a clone of the weights kept as the best state).
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    from recvae.data.snapshot import Snapshot
    from recvae.training import fit_model

    snapshot = Snapshot.load(args.data, verify=False)
    args.epochs = PROFILE_WARMUP_EPOCHS + PROFILE_EPOCHS
    config = _config(args)
    got: dict[str, Any] = {}

    def ready(prof: Any) -> None:
        got["events"] = prof.events()

    sched = schedule(wait=max(PROFILE_WARMUP_EPOCHS - 1, 0), warmup=min(PROFILE_WARMUP_EPOCHS, 1), active=PROFILE_EPOCHS, repeat=1)
    t = time.perf_counter()
    with _profile_scopes(), profile(activities=[ProfilerActivity.CPU], schedule=sched, on_trace_ready=ready) as prof:
        result = fit_model(snapshot.train, None, config, select_on=None, on_epoch_end=lambda epoch, record: prof.step())
    wall = time.perf_counter() - t
    if "events" not in got:
        raise RuntimeError("the profiler produced no trace")
    breakdown = profile_breakdown(got["events"])
    times = [float(h["epoch_time_s"]) for h in result.history]
    pc.write_result(
        args.out,
        {
            "system": "profile",
            "amp": args.amp,
            "torch": torch.__version__,
            "threads": config.train.num_threads,
            "warmup_epochs": PROFILE_WARMUP_EPOCHS,
            "epoch_times_s": times,  # fit_model's own epoch_time_s (training loop only), profiler on from the start
            "profiled_loop_s": float(np.mean(times[PROFILE_WARMUP_EPOCHS:])),
            "fit_wall_s": wall,
            "how": "torch.profiler.profile(activities=[CPU]) around recvae.training.loop.fit_model(train, None, config, select_on=None); "
                   "self CPU time of each event in the profiled epochs, summed by category",
            **breakdown,
        },
    )


def main() -> None:
    p = pc.parser(__doc__)
    p.add_argument("--task", choices=("train", "scoring", "profile"), default="train")
    p.add_argument("--select-on", choices=("none", "validation"), default="none")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="train.amp: none (float32) or bf16 (CPU autocast)")
    p.add_argument("--compile", action="store_true", help="train.compile: torch.compile the forward pass and likelihood")
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
        profile_task(args)
    else:
        scoring_task(args)


if __name__ == "__main__":
    main()
