"""What the reproduction protocols share: the data they start from, the rows and tables of their report, and its
Markdown page."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import harness

from recvae.data import datasets
from recvae.data.prepare import prepare
from recvae.data.snapshot import Snapshot

logger = logging.getLogger("bench.reproduce")

LABELS = {"ndcg@100": "NDCG@100", "recall@20": "Recall@20", "recall@50": "Recall@50",
          "recall_all@20": "Recall@20 (hits / n_test)", "ndcg@20": "NDCG@20"}


def prepare_named(name: str, smoke: bool = False) -> tuple[Snapshot, dict[str, Any]]:
    """The named dataset (found through RECVAE_DATA_HOME) prepared in memory, with where it came from; with
    `smoke`, harness.tiny_snapshot() in its place."""
    with harness.Timer() as t:
        if smoke:
            source, snap = {"format": "synthetic", "note": "tiny synthetic data (--smoke)"}, harness.tiny_snapshot()
        else:
            found = datasets.resolve(name)
            source, snap = found.describe(), prepare(found)
    logger.info("prepared %s from %s: %s", name, source, snap.snapshot_id)
    return snap, {"dataset": name, "source": source, "snapshot_id": snap.snapshot_id, "summary": snap.summary(),
                  "seconds": round(t.seconds, 2)}


def row(model: str, mean: dict[str, float], stderr: dict[str, float], published: dict[str, float],
        note: str) -> dict[str, Any]:
    """One line of the main table: measured means and standard errors beside published figures."""
    return {"model": model, "measured": {m: {"mean": v, "stderr": stderr.get(m)} for m, v in mean.items()},
            "published": dict(published), "note": note}


def table(title: str, header: list[str], rows: list[list[str]]) -> dict[str, Any]:
    """An extra table of the report, under its own heading."""
    return {"title": title, "header": header, "rows": rows}


def device_label() -> str:
    """The GPU, or the CPU and its cores: what the timings ran on, in a few words."""
    return harness.gpu_name() or f"CPU ({harness.cpu_model()}, {os.cpu_count()} cores)"


def hardware() -> dict[str, Any]:
    """harness.machine_info(), and the device in a few words."""
    return {**harness.machine_info(), "device": device_label()}


def num(value: float | None) -> str:
    """A figure to 4 decimals, or '–'."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def rel(path: Path) -> str:
    """`path` relative to the repository, when inside it."""
    return str(path.relative_to(harness.REPO)) if path.is_relative_to(harness.REPO) else str(path)


def jsonish(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(d, default=harness.json_default))


def _cell(m: dict[str, float] | None) -> str:
    if not m or m.get("mean") is None or math.isnan(m["mean"]):
        return "–"
    se = m.get("stderr")
    return f"{m['mean']:.4f}" + (f" ± {se:.4f}" if se is not None and not math.isnan(se) else "")


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: run facts, the main table beside the published figures, extra tables, notes."""
    metrics, run = report["metrics"], report["run"]
    pub_head = f"{report['published_label']}: " + " / ".join(LABELS[m] for m in metrics)
    main = [[r["model"], *(_cell(r["measured"].get(m)) for m in metrics),
             " / ".join(f"{r['published'][m]:.4f}".rstrip("0") if m in r["published"] else "–" for m in metrics)
             if r["published"] else "–", r["note"]] for r in report["rows"]]
    lines = [f"# {report['title']}", "",
             f"- command: `{run['command']}`",
             f"- date: {run['date']} (started {run['started_at']}), wall time {run['wall_s'] / 60:.1f} min",
             f"- device used: {run['device_used']}; torch threads {run['torch_threads']}",
             f"- hardware: {harness.describe(run['hardware'])}; load average at start / end {run['load_start']} / "
             f"{run['load_end']} (shared machine)",
             "",
             *harness.markdown_table(["model", *(LABELS[m] for m in metrics), pub_head, "notes"], main), ""]
    for t in report["tables"]:
        lines += [f"## {t['title']}", "", *harness.markdown_table(t["header"], t["rows"]), ""]
    lines += ["## Notes", "", *(f"- {n}" for n in report["notes"] if n), ""]
    return "\n".join(lines)
