"""Benchmark: do the model's own anomaly scores find shilling profiles? Fake users pushing one target item are
injected into ML-1M's training users (random, bandwagon and segment attacks, as in the shilling-attack literature,
on binary data), a Mult-VAE is trained on the poisoned data, and each score is measured by AUROC and precision at
the number of fakes, beside PyOD's IsolationForest and AutoEncoder (on a TruncatedSVD of the binary matrix) and two
profile statistics (length, mean item popularity). Also: how the attack moves the target item in the top-N lists of
real users, and how much of that dropping the flagged users (the top #fakes by a VAE score) undoes.

Attacks (binary data: a fake "rates" an item by having it): every fake has the target item plus
- random: filler items drawn uniformly;
- bandwagon: the 10 most popular items plus filler drawn in proportion to popularity;
- segment: filler drawn from the target's genre (its first one in movies.dat).
Attack sizes are shares of the training users; filler sizes are shares of the catalogue or the median real profile
length.

Run: .venv/bin/python bench/bench_anomalies.py [--epochs 10] [--grid full|subset] [--smoke]
Writes bench/results/anomalies.json and .md (rewritten after each configuration, so an interrupted run still
reports what it finished).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import harness
import numpy as np
import scipy.sparse as sp

logger = logging.getLogger("bench.anomalies")

ATTACKS = ("random", "bandwagon", "segment")
SIZES = (0.01, 0.05, 0.10)
FILLERS = ("1%", "3%", "median")
VAE_SCORES = ("nll_per_item", "kl", "kl_low", "neg_elbo")  # kl_low: -kl (the lowest KL first), as the queries offer
OTHER_SCORES = ("pyod_iforest_svd64", "pyod_autoencoder_svd64", "profile_length", "mean_item_popularity")
DROP_SIZE, DROP_FILLER = 0.05, "median"  # flagged users are dropped here, and wherever the attack moved the target
MOVED = 0.01  # the attack moved the target: its share of real users' top 100 rose by at least this
LIST_USERS = 2000  # real users whose top-N lists measure the target's rank


def ml1m() -> tuple[Any, list[str]]:
    """The cached ML-1M snapshot (as bench_similar_items) and each item's genres (movies.dat)."""
    from bench_similar_items import ml1m_snapshot

    from recvae.pipeline import item_metadata

    snap = ml1m_snapshot()
    meta = item_metadata(snap)  # movies.dat beside the snapshot's source
    genres = dict(zip(meta["item_id"].astype(str), meta["genres"].fillna(""), strict=True)) if meta is not None else {}
    return snap, [genres.get(str(i), "") for i in snap.items.raw_ids]


def choose_target(pop: np.ndarray, genres: list[str], rng: np.random.Generator) -> tuple[int, list[int]]:
    """A little-known item (popularity between the 40th and 60th percentile) with a genre, and its genre's items."""
    lo, hi = np.percentile(pop[pop > 0], [40, 60])
    pool = [i for i in np.flatnonzero((pop >= lo) & (pop <= hi)) if genres[i]]
    if not pool:  # synthetic data without genres: one "genre" of every tenth item
        target = int(rng.choice(np.flatnonzero((pop >= lo) & (pop <= hi))))
        return target, [i for i in range(len(pop)) if i % 10 == target % 10 and i != target]
    target = int(rng.choice(pool))
    genre = genres[target].split("|")[0]
    return target, [i for i, g in enumerate(genres) if genre in g.split("|") and i != target]


def filler_count(filler: str, n_items: int, median_len: int) -> int:
    return max(1, median_len - 1) if filler == "median" else max(1, round(float(filler[:-1]) / 100 * n_items))


def make_fakes(kind: str, n_fake: int, n_fill: int, pop: np.ndarray, target: int, segment: list[int],
               rng: np.random.Generator) -> sp.csr_matrix:
    """`n_fake` binary profiles, each the target plus `n_fill` filler items chosen as `kind` says."""
    n_items = len(pop)
    others = np.setdiff1d(np.arange(n_items), [target])
    top10 = [i for i in np.argsort(-pop, kind="stable") if i != target][:10]
    rows = []
    for _ in range(n_fake):
        if kind == "random":
            fill = rng.choice(others, size=min(n_fill, len(others)), replace=False)
        elif kind == "bandwagon":
            p = pop[others] / pop[others].sum()
            rest = rng.choice(others, size=min(n_fill, len(others)), replace=False, p=p)
            fill = np.unique(np.r_[top10, rest])[: max(n_fill, 10)]
        elif kind == "segment":
            seg = np.asarray(segment)
            fill = rng.choice(seg, size=min(n_fill, len(seg)), replace=False)
        else:
            raise ValueError(kind)
        rows.append(np.unique(np.r_[fill, target]))
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    idx = np.concatenate(rows)
    return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(n_fake, n_items))


def train_vae(train: sp.csr_matrix, epochs: int, seed: int = 0) -> Any:
    """A Mult-VAE (paper architecture, constant beta 0.2: the KL counts from the first epoch) trained briefly."""
    from recvae.config import Config, TrainConfig
    from recvae.training import fit_model

    config = Config(train=TrainConfig(epochs=epochs, device="cpu", beta_schedule="constant", beta=0.2, seed=seed))
    return fit_model(train, None, config, select_on=None).recommender


def auroc_precision(score: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    s = np.nan_to_num(score, nan=-np.inf)
    k = int(labels.sum())
    top = np.argsort(-s, kind="stable")[:k]
    return {"auroc": float(roc_auc_score(labels, np.nan_to_num(score, nan=np.nanmin(score)))),
            "precision_at_fakes": float(labels[top].mean())}


def other_scores(X: sp.csr_matrix, smoke: bool) -> dict[str, np.ndarray]:
    """PyOD detectors on a 64-dimension TruncatedSVD of the binary matrix, and the profile statistics."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from sklearn.decomposition import TruncatedSVD

    pop = np.asarray(X.sum(axis=0)).ravel()
    length = np.diff(X.indptr).astype(np.float64)
    mean_pop = np.asarray(X @ pop).ravel() / np.maximum(length, 1)
    Z = TruncatedSVD(n_components=min(64, X.shape[1] - 1), random_state=0).fit_transform(X)
    iforest = IForest(n_estimators=200, random_state=0).fit(Z)
    ae = AutoEncoder(epoch_num=1 if smoke else 10, batch_size=256, hidden_neuron_list=[32, 16], verbose=0,
                     random_state=0, device="cpu").fit(Z)
    return {"pyod_iforest_svd64": iforest.decision_scores_, "pyod_autoencoder_svd64": ae.decision_scores_,
            "profile_length": length, "mean_item_popularity": mean_pop}


def target_in_lists(rec: Any, history: sp.csr_matrix, target: int) -> dict[str, float]:
    """Over real users' top-100 unseen lists: share with the target in the top 20 and top 100, its mean rank."""
    from recvae.serving.topn import iter_topn

    ranks = []
    for top in iter_topn(rec, history, 100, chunk_size=500):
        hit = top.items == target
        ranks += [int(np.argmax(h)) + 1 if h.any() else 0 for h in hit]
    r = np.asarray(ranks)
    return {"hit@20": float(np.mean((r > 0) & (r <= 20))), "hit@100": float(np.mean(r > 0)),
            "mean_rank_when_listed": float(r[r > 0].mean()) if (r > 0).any() else None}


def configurations(grid: str, smoke: bool) -> list[tuple[str, float, str]]:
    """The configurations in the order they run: the attacks interleaved, the subset's first (5 % of users at the
    median filler, then the other sizes at the median filler, then the other fillers at 5 %), so that a run stopped
    by its time budget still covers every attack type."""
    if smoke:
        return [(a, 0.05, "median") for a in ATTACKS]
    order = [(DROP_SIZE, DROP_FILLER), *((s, "median") for s in SIZES if s != DROP_SIZE),
             *((DROP_SIZE, f) for f in FILLERS if f != DROP_FILLER)]
    if grid == "full":
        order += [(s, f) for s in SIZES for f in FILLERS if (s, f) not in order]
    return [(a, s, f) for s, f in order for a in ATTACKS]


def run_one(train: sp.csr_matrix, kind: str, size: float, filler: str, ctx: dict[str, Any]) -> dict[str, Any]:
    from recvae.models.latent import user_elbo

    rng = np.random.default_rng(abs(hash((kind, size, filler))) % 2**32)
    n_real = train.shape[0]
    n_fake = max(1, round(size * n_real))
    n_fill = filler_count(filler, train.shape[1], ctx["median_len"])
    fakes = make_fakes(kind, n_fake, n_fill, ctx["pop"], ctx["target"], ctx["segment"], rng)
    poisoned = sp.vstack([train, fakes], format="csr")
    labels = np.r_[np.zeros(n_real), np.ones(n_fake)]
    with harness.Timer() as t:
        rec = train_vae(poisoned, ctx["epochs"])
    terms = user_elbo(rec, poisoned)
    terms["kl_low"] = -terms["kl"]
    scores = {s: terms[s] for s in VAE_SCORES} | other_scores(poisoned, ctx["smoke"])
    out: dict[str, Any] = {"attack": kind, "size": size, "filler": filler, "fakes": n_fake, "filler_items": n_fill,
                           "train_seconds": round(t.seconds, 1),
                           "scores": {name: auroc_precision(v, labels) for name, v in scores.items()},
                           "target": {"poisoned": target_in_lists(rec, ctx["list_history"], ctx["target"])}}
    moved = out["target"]["poisoned"]["hit@100"] - ctx["clean"]["hit@100"] >= MOVED
    if moved or (size, filler) == (DROP_SIZE, DROP_FILLER) or ctx["smoke"]:
        out["dropped"] = {}
        for by in ctx["drop_scores"]:
            flagged = np.argsort(-np.nan_to_num(scores[by], nan=-np.inf), kind="stable")[:n_fake]
            keep = np.setdiff1d(np.arange(poisoned.shape[0]), flagged)
            cleaned = train_vae(poisoned[keep], ctx["epochs"])
            out["target"][f"dropped_by_{by}"] = target_in_lists(cleaned, ctx["list_history"], ctx["target"])
            out["dropped"][by] = {"users": n_fake, "fakes_among_them": int(labels[flagged].sum())}
    logger.info("%s %.0f%% filler %s: %s", kind, 100 * size, filler,
                {k: round(v["auroc"], 3) for k, v in out["scores"].items()})
    return out


def markdown(report: dict[str, Any]) -> str:
    names = [*VAE_SCORES, *OTHER_SCORES]
    head = ["attack", "fakes", "filler", *names]
    rows = [[r["attack"], f"{r['fakes']} ({100 * r['size']:.0f}%)", f"{r['filler']} ({r['filler_items']})",
             *(f"{r['scores'][n]['auroc']:.3f} / {r['scores'][n]['precision_at_fakes']:.2f}" for n in names)]
            for r in report["configs"]]
    clean = report["clean_target"]
    trows = [["clean (no attack)", "-", f"{clean['hit@20']:.3f}", f"{clean['hit@100']:.3f}",
              _rank(clean["mean_rank_when_listed"])]]
    for r in report["configs"]:
        for which, t in r["target"].items():
            label = f"{r['attack']} {100 * r['size']:.0f}% filler {r['filler']}"
            by = which.removeprefix("dropped_by_")
            d = r.get("dropped", {}).get(by, {})
            what = "poisoned" if which == "poisoned" else (f"poisoned, top {d['users']} by {by} dropped "
                                                           f"({d['fakes_among_them']} of them fake), retrained")
            trows.append([label, what, f"{t['hit@20']:.3f}", f"{t['hit@100']:.3f}", _rank(t["mean_rank_when_listed"])])
    lines = [
        *harness.header("Shilling profiles vs the model's anomaly scores (ML-1M)", report),
        f"Data: {report['data']} ({report['n_real']:,} real training users, {report['n_items']:,} items, median "
        f"profile {report['median_len']} items). Target item {report['target_id']} (popularity "
        f"{report['target_pop']}, percentile {report['target_pop_pct']:.0f}); segment: its genre "
        f"'{report['segment_genre']}' ({report['segment_items']} items). Mult-VAE [I-600-200-600-I], constant beta "
        f"0.2, trained {report['epochs']} epochs on the poisoned training users (CPU, no epoch selection). "
        f"{report['grid_note']}",
        "",
        "## Detection: AUROC / precision at the number of fakes (every training user scored; higher is better)",
        "",
        *harness.markdown_table(head, rows),
        "",
        "Scores: `nll_per_item`, `kl`, `neg_elbo` are `recvae anomalies`' (higher = more anomalous); PyOD 3.6.7 "
        "IForest (200 trees) and AutoEncoder ([32, 16], 10 epochs) on a 64-dimension TruncatedSVD of the binary "
        "matrix; profile length and mean item popularity used as scores as they are (an AUROC below 0.5 means the "
        "fakes sit at the other end).",
        "",
        f"## The target item in real users' top-100 lists ({report['list_users']:,} real users)",
        "",
        *harness.markdown_table(["attack", "model", "target in top 20", "target in top 100", "mean rank when listed"],
                                trows),
        "",
        "## Reading",
        "",
        report.get("reading", ""),
        "",
        f"Total run time {report.get('seconds', '?')} s.",
        "",
    ]
    return "\n".join(lines)


def _rank(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def reading(report: dict[str, Any]) -> str:
    """Per attack: which score has the best mean AUROC, and how the VAE scores fare; written from the figures."""
    out = []
    for kind in ATTACKS:
        rows = [r for r in report["configs"] if r["attack"] == kind]
        if not rows:
            continue
        mean = {n: float(np.mean([r["scores"][n]["auroc"] for r in rows])) for n in [*VAE_SCORES, *OTHER_SCORES]}
        best = max(mean, key=mean.__getitem__)
        vae_best = max(VAE_SCORES, key=mean.__getitem__)
        worst_vae = min(VAE_SCORES, key=mean.__getitem__)
        others = ", ".join(f"{n} {_flip(mean[n])}" for n in OTHER_SCORES)
        out.append(f"- **{kind}** ({len(rows)} configurations, mean AUROC): best {best} {mean[best]:.3f}; best VAE "
                   f"score {vae_best} {mean[vae_best]:.3f}, weakest {worst_vae} {mean[worst_vae]:.3f}; {others}.")
    return "\n".join(out)


def _flip(auroc: float) -> str:
    """An AUROC, with what ranking the other way round would give when it is below 0.5."""
    return f"{auroc:.3f}" + (f" ({1 - auroc:.3f} reversed)" if auroc < 0.5 else "")


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--epochs", type=int, default=10, help="Mult-VAE training epochs per model (default 10)")
    p.add_argument("--grid", choices=["full", "subset"], default="full",
                   help="full: 3 attacks x 3 sizes x 3 fillers; subset: every size at the median filler and every "
                        "filler at 5%% of users")
    p.add_argument("--budget-minutes", type=float, default=75.0,
                   help="start no new configuration after this long; the page says how many finished")
    p.add_argument("--drop-scores", nargs="+", choices=VAE_SCORES, default=["nll_per_item", "kl_low"],
                   help="the VAE scores whose top #fakes users are dropped (one retraining each)")
    args = harness.parse(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recvae.training").setLevel(logging.WARNING)
    from recvae.serving.topn import iter_topn  # noqa: F401  (fail early if serving is broken)

    with harness.Timer() as total:
        if args.smoke:
            snap, genres = harness.tiny_snapshot(), []
            genres = [""] * snap.n_items
        else:
            snap, genres = ml1m()
        train = sp.csr_matrix(snap.train, dtype=np.float32)
        rng = np.random.default_rng(0)
        pop = np.asarray(train.sum(axis=0)).ravel()
        target, segment = choose_target(pop, genres, rng)
        lengths = np.diff(train.indptr)
        list_rows = np.sort(rng.choice(train.shape[0], size=min(LIST_USERS, train.shape[0]), replace=False))
        epochs = 1 if args.smoke else args.epochs
        ctx = {"pop": pop, "target": target, "segment": segment, "median_len": int(np.median(lengths)),
               "epochs": epochs, "smoke": args.smoke, "list_history": train[list_rows],
               "drop_scores": args.drop_scores}
        configs = configurations(args.grid, args.smoke)
        report: dict[str, Any] = {
            "command": harness.command_line(__file__, argv), "date": harness.now(),
            "machine": harness.machine_info(("torch", "numpy", "scipy", "pyod", "scikit-learn")),
            "data": "tiny synthetic (--smoke)" if args.smoke else f"{args.data_home}/ml-1m via recvae prepare",
            "n_real": train.shape[0], "n_items": train.shape[1], "median_len": ctx["median_len"], "epochs": epochs,
            "target_id": str(snap.items.raw_ids[target]), "target_pop": int(pop[target]),
            "target_pop_pct": float((pop < pop[target]).mean() * 100),
            "segment_genre": genres[target].split("|")[0] if genres[target] else "every tenth item",
            "segment_items": len(segment), "list_users": len(list_rows), "grid": args.grid,
            "grid_note": (f"Grid: {'smoke' if args.smoke else args.grid} ({len(configs)} configurations"
                          + ("" if args.grid == "full" or args.smoke else "; the full 27 did not fit the CPU "
                             "time of a shared 2-core machine")
                          + f"); the top #fakes users by {' and by '.join(args.drop_scores)} dropped and the model "
                          f"retrained (one retraining each) at {DROP_SIZE:.0%} of users, filler {DROP_FILLER}, and "
                          f"wherever the attack raised the target's share of real users' top 100 by {MOVED} or "
                          "more."),
            "configs": [],
        }
        report["clean_target"] = ctx["clean"] = target_in_lists(train_vae(train, epochs), ctx["list_history"],
                                                                 target)
        for kind, size, filler in configs:
            if time.perf_counter() - total.start > 60 * args.budget_minutes:
                report["grid_note"] += (f" Stopped by the {args.budget_minutes:g}-minute budget after "
                                        f"{len(report['configs'])} of {len(configs)} configurations (the 2 CPU cores "
                                        "were shared with other jobs).")
                break
            report["configs"].append(run_one(train, kind, size, filler, ctx))
            report["reading"] = reading(report)
            harness.write_results(args.out, "anomalies", report, markdown(report))
    report["seconds"] = round(total.seconds, 1)
    harness.write_results(args.out, "anomalies", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
