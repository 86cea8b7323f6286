"""Benchmark: popularity, ALS and EASE on ML-1M pro_sg (Liang et al.'s split), tuned on validation users.

Run: .venv/bin/python bench/baselines_ml1m.py [--data ../shared/data/ml-1m/pro_sg] [--quick | --smoke]
Writes bench/results/baselines_ml1m.json and .md; compare with /work/shared/REFERENCE.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import harness

from recvae.data.readers import read_pro_sg
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import DEFAULT_METRICS, evaluate
from recvae.models.baselines import fit_baseline, tune

logger = logging.getLogger("bench.baselines_ml1m")

GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"lam": [50.0, 100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 2000.0, 5000.0]},
    "als": {"factors": [64, 128], "regularization": [10.0, 50.0, 200.0], "alpha": [3.0, 10.0, 30.0],
            "iterations": [15]},
}
QUICK_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"lam": [100.0, 500.0, 2000.0]},
    "als": {"factors": [64], "regularization": [10.0], "alpha": [1.0, 3.0], "iterations": [10]},
}
SMOKE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"lam": [100.0, 500.0]},
    "als": {"factors": [8], "regularization": [10.0], "alpha": [1.0], "iterations": [2]},
}
# /work/shared/REFERENCE.md, ML-1M pro_sg, test users
REFERENCE = {
    "popularity": {"ndcg@100": 0.219},
    "ease": {"ndcg@100": 0.403, "ndcg@100_stderr": 0.006, "recall@20": 0.332, "recall@50": 0.439},
    "mult-vae (paper settings)": {"ndcg@100": 0.381, "recall@20": 0.309, "recall@50": 0.427},
}


def tuned_baseline(snap: Snapshot, kind: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """A baseline tuned on validation users, refitted with the winner and scored once on the test users."""
    with harness.Timer() as tune_t:
        best, table = tune(kind, snap, grid)
    with harness.Timer() as fit_t:
        model = fit_baseline(kind, snap.train, items=snap.items, **best)
    with harness.Timer() as eval_t:
        res = evaluate(model.scores, *snap.heldout("test"), DEFAULT_METRICS)
    best_row = next(r for r in table if all(r[k] == v for k, v in best.items()))
    logger.info("%s %s: test %s", kind, best, {m: round(v, 4) for m, v in res.means.items()})
    return {
        "params": model.params(),
        "validation_ndcg@100": best_row["ndcg@100"],
        "test": {m: res.means[m] for m in DEFAULT_METRICS},
        "test_stderr": {m: res.stderr[m] for m in DEFAULT_METRICS},
        "test_users": res.n_users,
        "tuning_table": table,
        "seconds": {"tune": round(tune_t.seconds, 2), "fit": round(fit_t.seconds, 2),
                    "test_eval": round(eval_t.seconds, 2)},
    }


def run(snap: Snapshot, data: str, grids: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Every baseline of `grids` tuned and tested on `snap` (read from `data`)."""
    with harness.Timer() as t:
        results = {kind: tuned_baseline(snap, kind, grid) for kind, grid in grids.items()}
    return {
        "data": data,
        "snapshot_id": snap.snapshot_id,
        "counts": snap.summary(),
        "results": results,
        "reference": REFERENCE,
        "total_seconds": round(t.seconds, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    """baselines_ml1m.md: the tuned baselines beside REFERENCE.md, each grid, and the run."""
    lines = [
        "# Baselines on ML-1M pro_sg (strong generalization, 1,000 test users)",
        "",
        "Hyperparameters chosen on the 1,000 validation users (NDCG@100); models fit on the 4,034 training users;",
        "test users folded in from their 80 % part, fold-in items excluded from the ranking. ± is one standard error.",
        "",
        "| model | chosen params | validation NDCG@100 | test NDCG@100 | Recall@20 | Recall@50 | reference NDCG@100 |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in report["results"].items():
        t, se = r["test"], r["test_stderr"]
        ref = report["reference"].get(kind, {})
        ref_txt = ""
        if ref:
            stderr = f" ± {ref['ndcg@100_stderr']:.3f}" if "ndcg@100_stderr" in ref else ""
            ref_txt = f"{ref['ndcg@100']:.3f}{stderr}"
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "random_state") or "-"
        lines.append(
            f"| {kind} | {params} | {r['validation_ndcg@100']:.4f} | {t['ndcg@100']:.4f} ± {se['ndcg@100']:.4f} "
            f"| {t['recall@20']:.4f} ± {se['recall@20']:.4f} | {t['recall@50']:.4f} ± {se['recall@50']:.4f} "
            f"| {ref_txt} |"
        )
    lines += ["", "## Tuning (validation NDCG@100)", ""]
    for kind, r in report["results"].items():
        if len(r["tuning_table"]) < 2:
            continue
        keys = [k for k in r["tuning_table"][0] if k not in ("ndcg@100_stderr", "n_users")]
        lines += [f"### {kind}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in r["tuning_table"]:
            lines.append("| " + " | ".join(f"{row[k]:.4f}" if k == "ndcg@100" else str(row[k]) for k in keys) + " |")
        lines.append("")
    lines += [
        "## Run",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {harness.describe(report['machine'])}",
        f"- total run time: {report['total_seconds']} s; per model (tune / final fit / test eval, s): "
        + "; ".join(f"{k} {r['seconds']['tune']} / {r['seconds']['fit']} / {r['seconds']['test_eval']}"
                    for k, r in report["results"].items()),
        f"- data: `{report['data']}` (snapshot {report['snapshot_id']})",
        f"- finished: {report['finished_at']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Tune and test every baseline; write baselines_ml1m[_quick].json and .md."""
    p = harness.parser(__doc__, quick="small grids (a smoke run, minutes less)")
    p.add_argument("--data", type=Path, default=None, help="pro_sg folder (default: DATA_HOME/ml-1m/pro_sg)")
    args = harness.parse(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data = args.data or args.data_home / "ml-1m" / "pro_sg"
    snap = harness.tiny_snapshot() if args.smoke else read_pro_sg(data)
    logger.info("loaded %s: %s", "tiny synthetic (--smoke)" if args.smoke else data, snap.summary())
    grids = SMOKE_GRIDS if args.smoke else QUICK_GRIDS if args.quick else GRIDS
    report = {"command": harness.command_line(__file__, argv), "machine": harness.machine_info(),
              **run(snap, "tiny synthetic (--smoke)" if args.smoke else str(data), grids),
              "finished_at": harness.now()}
    name = "baselines_ml1m_quick" if args.quick else "baselines_ml1m"
    harness.write_results(args.out, name, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
