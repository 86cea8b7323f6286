"""Where an epoch of ours goes (peer_ours.py --task profile): recvae.training.loop.fit_model under torch.profiler
(PROFILE_WARMUP_EPOCHS warm-up epochs, then PROFILE_EPOCHS profiled ones), aten ops' self CPU time grouped into
categories (see `classify`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import harness
import numpy as np
import peer_common as pc
import torch

PROFILE_WARMUP_EPOCHS = 1
PROFILE_EPOCHS = 2

# ------------------------------------------------------------------------------------------------ profile

# Categories of the profile, in report order. How an op is classified (see `classify`):
#  1. scopes: the op runs inside a record_function scope that `_scoped` wraps around a library function for
#     the profile only (the training loop itself is recvae.training.loop.fit_model, unchanged), or inside the
#     optimizer's
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
    # normalized_dropout (L2 norm, index_add_) + SparseLinear (embedding_bag)
    "bench::sparse_first_layer": "sparse first layer",
    "bench::likelihood": "log-softmax likelihood",  # MultVAE.nll (multinomial_nll): logsumexp, picked logits, sub
}
DENSE_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::addmv",
             "aten::mv"}
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
def _profile_scopes() -> Iterator[None]:
    """record_function scopes around the library functions whose ops are otherwise ambiguous by name (index, sub...).

    Wrappers only: each calls the original function unchanged, and everything is restored on exit.
    """
    import recvae.models.sparse as sparse
    import recvae.models.vae as vae

    patches = [
        (sparse.SparseRows, "batch", "bench::data_batching"),
        (vae, "normalized_dropout", "bench::sparse_first_layer"),
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
    chain: list[Any] = []
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
        "categories": {c: {"s_per_epoch": us.get(c, 0.0) / n / 1e6, "share": us.get(c, 0.0) / wall_us}
                       for c in CATEGORIES},
        # the biggest ops of each category (self time, s per epoch): to check the classification by eye
        "top_ops": {c: {k: v / n / 1e6 for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:6]}
                    for c, d in ops.items()},
    }


def profile_task(args: Any, config: Any) -> None:
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
    got: dict[str, Any] = {}

    def ready(prof: Any) -> None:
        got["events"] = prof.events()

    sched = schedule(wait=max(PROFILE_WARMUP_EPOCHS - 1, 0), warmup=min(PROFILE_WARMUP_EPOCHS, 1),
                     active=PROFILE_EPOCHS, repeat=1)
    with harness.Timer() as t, _profile_scopes(), \
            profile(activities=[ProfilerActivity.CPU], schedule=sched, on_trace_ready=ready) as prof:
        result = fit_model(snapshot.train, None, config, select_on=None, on_epoch_end=lambda epoch, record: prof.step())
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
            "fit_wall_s": t.seconds,
            "how": "torch.profiler.profile(activities=[CPU]) around "
                   "recvae.training.loop.fit_model(train, None, config, select_on=None); "
                   "self CPU time of each event in the profiled epochs, summed by category",
            **breakdown,
        },
    )
