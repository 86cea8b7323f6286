"""Benchmark: popularity, ALS and EASE on ML-1M pro_sg (Liang et al.'s split), tuned on validation users.

Run: .venv/bin/python bench/baselines_ml1m.py [--data ../shared/data/ml-1m/pro_sg] [--quick]
Writes bench/results/baselines_ml1m.json and .md; compare with /work/shared/REFERENCE.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recvae.data.readers import read_pro_sg  # noqa: E402
from recvae.data.snapshot import Snapshot  # noqa: E402
from recvae.evaluation.metrics import DEFAULT_METRICS, evaluate  # noqa: E402
from recvae.models.baselines import fit_baseline, tune  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

logger = logging.getLogger("bench.baselines_ml1m")

GRIDS = {
    "popularity": {},
    "ease": {"lam": [50.0, 100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 2000.0, 5000.0]},
    "als": {"factors": [64, 128], "regularization": [10.0, 50.0, 200.0], "alpha": [3.0, 10.0, 30.0], "iterations": [15]},
}
QUICK_GRIDS = {
    "popularity": {},
    "ease": {"lam": [100.0, 500.0, 2000.0]},
    "als": {"factors": [64], "regularization": [10.0], "alpha": [1.0, 3.0], "iterations": [10]},
}
# /work/shared/REFERENCE.md, ML-1M pro_sg, test users
REFERENCE = {
    "popularity": {"ndcg@100": 0.219},
    "ease": {"ndcg@100": 0.403, "ndcg@100_stderr": 0.006, "recall@20": 0.332, "recall@50": 0.439},
    "mult-vae (paper settings)": {"ndcg@100": 0.381, "recall@20": 0.309, "recall@50": 0.427},
}


def default_data_dir() -> Path:
    home = os.environ.get("RECVAE_DATA_HOME")
    return (Path(home) if home else REPO.parent / "shared" / "data") / "ml-1m" / "pro_sg"


def machine() -> str:
    return describe()


def tuned_baseline(snap: Snapshot, kind: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """A baseline tuned on validation users, refitted with the winner and scored once on the test users."""
    t = time.perf_counter()
    best, table = tune(kind, snap, grid)
    tune_s = time.perf_counter() - t
    t = time.perf_counter()
    model = fit_baseline(kind, snap.train, items=snap.items, **best)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate(model.scores, *snap.heldout("test"), DEFAULT_METRICS)
    eval_s = time.perf_counter() - t
    best_row = next(r for r in table if all(r[k] == v for k, v in best.items()))
    logger.info("%s %s: test %s", kind, best, {m: round(v, 4) for m, v in res.means.items()})
    return {
        "params": model.params(),
        "validation_ndcg@100": best_row["ndcg@100"],
        "test": {m: res.means[m] for m in DEFAULT_METRICS},
        "test_stderr": {m: res.stderr[m] for m in DEFAULT_METRICS},
        "test_users": res.n_users,
        "tuning_table": table,
        "seconds": {"tune": round(tune_s, 2), "fit": round(fit_s, 2), "test_eval": round(eval_s, 2)},
    }


def run(data: Path, grids: dict) -> dict:
    t0 = time.perf_counter()
    snap = read_pro_sg(data)
    logger.info("loaded %s: %s", data, snap.summary())
    results = {kind: tuned_baseline(snap, kind, grid) for kind, grid in grids.items()}
    return {
        "data": str(data),
        "snapshot_id": snap.snapshot_id,
        "counts": snap.summary(),
        "results": results,
        "reference": REFERENCE,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "machine": machine(),
        "command": " ".join([".venv/bin/python", "bench/baselines_ml1m.py", *sys.argv[1:]]),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def markdown(report: dict) -> str:
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
        ref_txt = f"{ref['ndcg@100']:.3f}" + (f" ± {ref['ndcg@100_stderr']:.3f}" if "ndcg@100_stderr" in ref else "") if ref else ""
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "random_state") or "-"
        lines.append(
            f"| {kind} | {params} | {r['validation_ndcg@100']:.4f} | {t['ndcg@100']:.4f} ± {se['ndcg@100']:.4f} "
            f"| {t['recall@20']:.4f} ± {se['recall@20']:.4f} | {t['recall@50']:.4f} ± {se['recall@50']:.4f} | {ref_txt} |"
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
        f"- machine: {report['machine']}",
        f"- total run time: {report['total_seconds']} s; per model (tune / final fit / test eval, s): "
        + "; ".join(f"{k} {r['seconds']['tune']} / {r['seconds']['fit']} / {r['seconds']['test_eval']}" for k, r in report["results"].items()),
        f"- data: `{report['data']}` (snapshot {report['snapshot_id']})",
        f"- finished: {report['finished_at']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir(), help="pro_sg folder (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="results folder")
    ap.add_argument("--quick", action="store_true", help="small grids (a smoke run, minutes less)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = run(args.data, QUICK_GRIDS if args.quick else GRIDS)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "baselines_ml1m_quick" if args.quick else "baselines_ml1m"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
