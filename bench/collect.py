"""Assemble bench/RESULTS.md from the per-benchmark tables in bench/results/*.md (each names its own command)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["reproduce_ml-1m-pro-sg", "vae_tuning", "parity_ml1m", "baselines_ml1m", "reproduce_gowalla", "reproduce_gowalla_constant_lr",
         "reproduce_ml-20m",
         "peers", "peers_with_checkpoints", "peers_ml20m", "peers_ml20m_2threads", "peers_ml20m_onelayer",
         "train_speed", "train_speed_synthetic-ml20m", "prepare", "recommend"]


def main() -> None:
    """Write RESULTS.md: an index, then every results table, known ones first."""
    tables = {p.stem: p for p in sorted((HERE / "results").glob("*.md"))}
    names = [n for n in ORDER if n in tables] + [n for n in tables if n not in ORDER]
    parts = [
        "# Benchmark results\n",
        "Every figure below was measured on the machine each section names, by the command it shows. "
        "Regenerate this page with `.venv/bin/python bench/collect.py` after running a benchmark.\n",
        *[f"- [{n}](results/{n}.md)" for n in names],
        "",
    ]
    for n in names:
        text = tables[n].read_text().strip()
        parts += ["---", "", text.replace("# ", "## ", 1) if text.startswith("# ") else text, ""]
    (HERE / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
