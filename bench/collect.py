"""Assemble bench/RESULTS.md from the per-benchmark tables in bench/results/*.md (each names its own command).

    .venv/bin/python bench/collect.py [--results bench/results] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["reproduce_ml-1m-pro-sg", "vae_tuning", "tune_ml-1m-pro-sg", "tune_ml-latest-small", "tune_gowalla",
         "parity_ml1m", "baselines_ml1m", "reproduce_gowalla",
         "reproduce_gowalla_constant_lr", "reproduce_ml-20m",
         "peers", "peers_with_checkpoints", "peers_ml20m", "peers_ml20m_2threads", "peers_ml20m_onelayer",
         "train_speed", "train_speed_synthetic-ml20m", "prepare", "prepare_stream", "recommend", "scale"]


def collect(results: Path) -> str:
    """The page: an index, then every results table, known ones first."""
    tables = {p.stem: p for p in sorted(results.glob("*.md"))}
    names = [n for n in ORDER if n in tables] + [n for n in tables if n not in ORDER]
    rel = f"{results.name}/" if results.parent == HERE else f"{results}/"
    parts = [
        "# Benchmark results\n",
        "Every figure below was measured on the machine each section names, by the command it shows. "
        "Regenerate this page with `.venv/bin/python bench/collect.py` after running a benchmark.\n",
        *[f"- [{n}]({rel}{n}.md)" for n in names],
        "",
    ]
    for n in names:
        text = tables[n].read_text().strip()
        parts += ["---", "", text.replace("# ", "## ", 1) if text.startswith("# ") else text, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Write RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=HERE / "results", help="folder of the <name>.md tables")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the page to write")
    args = p.parse_args(argv)
    args.out.write_text(collect(args.results.resolve()))


if __name__ == "__main__":
    main()
