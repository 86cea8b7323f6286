"""Every bench script's smoke mode (--smoke: tiny synthetic data, seconds) runs in its own process and writes its
results pair, <name>.json and <name>.md naming the command that made them, into a temporary --out; bench/collect.py
then assembles a RESULTS page from them. No real data is needed: RECVAE_DATA_HOME points at an empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
# script -> (the argument lists it is run with, in order, each plus --smoke --out OUT; the results names they write).
# Longest first: two at a time, the short ones fill in behind them.
SMOKE: dict[str, tuple[list[list[str]], list[str]]] = {
    "peers/run.py": ([[]], ["peers"]),
    "bench_recommend.py": ([[]], ["recommend"]),
    "reproduce.py": ([["--dataset", "ml-1m-pro-sg"], ["--dataset", "gowalla"], ["--dataset", "ml-20m"]],
                     ["reproduce_ml-1m-pro-sg", "reproduce_gowalla", "reproduce_ml-20m"]),
    "tune_vae_ml1m.py": ([["run", "smoke_a"], ["report"]], ["vae_tuning"]),
    "parity_ml1m.py": ([[]], ["parity_ml1m"]),
    "baselines_ml1m.py": ([[]], ["baselines_ml1m"]),
    "train_speed.py": ([[]], ["train_speed"]),
    "bench_scale.py": ([[]], ["scale"]),
    "bench_prepare.py": ([[]], ["prepare"]),
    "tune_splits.py": ([[]], ["tune_synthetic"]),
    "bench_prepare_stream.py": ([[]], ["prepare_stream"]),
    "bench_anomalies.py": ([[]], ["anomalies"]),
    "bench_similar_items.py": ([[]], ["similar_items"]),
}
# scripts without a smoke run of their own here, and why
NO_SMOKE = {
    "peers/peer_recbole.py": "runs only inside bench/peers/.venv-recbole, which run.py installs from the package "
                             "index (minutes, RecBole's dependencies); peers/run.py --smoke runs ours alone",
    "peers/peer_cornac.py": "runs only inside bench/peers/.venv-cornac, which run.py installs from the package "
                            "index (minutes); peers/run.py --smoke runs ours alone",
    "peers/peer_ours.py": "a child of peers/run.py, whose smoke runs all three of its tasks (train, scoring, profile)",
    "gpu_check.py": "run through bench/gpu_check.sh, whose CPU fallback tests/bench/test_gpu_check.py runs",
    "collect.py": "writes no results pair: test_collect_assembles_the_smoke_results runs it on the smoke outputs",
}
TIMEOUT_S = 300


def scripts() -> set[str]:
    """Every bench file run as a script (the rest are modules)."""
    return {str(p.relative_to(BENCH)) for p in BENCH.rglob("*.py")
            if ".venv" not in p.parts and "out" not in p.parts and 'if __name__ == "__main__":' in p.read_text()}


def _run_script(script: str, out: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Each of the script's smoke commands in turn, until one fails."""
    done = []
    for args in SMOKE[script][0]:
        cmd = [sys.executable, str(BENCH / script), *args, "--smoke", "--out", str(out)]
        done.append(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S))
        if done[-1].returncode != 0:
            break
    return done


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[subprocess.CompletedProcess]]]:
    """Every script's smoke runs, two scripts at a time, all writing into one results folder."""
    out = tmp_path_factory.mktemp("bench-results")
    empty = tmp_path_factory.mktemp("no-data")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECVAE_DATA_HOME": str(empty), "XDG_CACHE_HOME": str(empty),
           "OPENBLAS_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(SMOKE, pool.map(lambda s: _run_script(s, out, env), SMOKE), strict=True))
    return out, runs


def test_every_script_has_a_smoke_run_or_a_reason() -> None:
    assert scripts() == set(SMOKE) | set(NO_SMOKE)
    assert not set(SMOKE) & set(NO_SMOKE)


@pytest.mark.parametrize("script", list(SMOKE))
def test_smoke_run_writes_its_results_pair(script: str, smoke_out: tuple[Path, dict]) -> None:
    out, runs = smoke_out
    for proc in runs[script]:
        assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert len(runs[script]) == len(SMOKE[script][0])
    for name in SMOKE[script][1]:
        report = json.loads((out / f"{name}.json").read_text())
        page = (out / f"{name}.md").read_text()
        assert "--smoke" in report["command"] and report["command"] in page
        assert page.startswith("# ")


def test_collect_assembles_the_smoke_results(smoke_out: tuple[Path, dict]) -> None:
    out, _ = smoke_out
    page = out / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(BENCH / "collect.py"), "--results", str(out), "--out", str(page)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    for _, names in SMOKE.values():
        for name in names:
            assert f"{name}.md)" in text
    assert text.count("\n---\n") == sum(len(names) for _, names in SMOKE.values())


def _zero_walls(node: object) -> None:
    """Every wall-clock figure in a results tree set to 0.0, as a timing under the rounding step reads."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("wall_s") and isinstance(value, float | int):
                node[key] = 0.0
            else:
                _zero_walls(value)
    elif isinstance(node, list):
        for value in node:
            _zero_walls(value)


def test_recommend_page_renders_when_a_timing_rounds_to_zero(smoke_out: tuple[Path, dict]) -> None:
    # On a fast machine the smoke's scoring took under 0.05 s, its wall rounded to 0.0, and the page divided by it.
    sys.path.insert(0, str(BENCH))  # bench/ is not a package: its modules import each other by name
    from bench_recommend import markdown

    out, _ = smoke_out
    report = json.loads((out / "recommend.json").read_text())
    _zero_walls(report)
    page = markdown(report)
    assert f"{report['parts']['throughput']['scoring_alone']['rows_per_s']:,}" in page


def test_tune_page_of_a_lightgcn_split_shows_its_metrics_and_the_reproduced_mult_vae(smoke_out: tuple[Path, dict]
                                                                                     ) -> None:
    # Gowalla's page: the LightGCN protocol's Recall@20 and NDCG@20 beside NDCG@100, and the paper's Mult-VAE read
    # from a reproduce.py result (unpaired) where retraining it would take hours.
    sys.path.insert(0, str(BENCH))
    from tune_splits import markdown

    out, _ = smoke_out
    report = json.loads((out / "tune_synthetic.json").read_text())
    assert report["study"]["trial_min"] >= 0 and "paper Mult-VAE" in report["models"]
    del report["models"]["paper Mult-VAE"]
    for i, m in enumerate(report["models"].values()):
        m["test"].update({"recall_all@20": 0.1111 + i, "ndcg@20": 0.2222 + i})
    report["reproduced"] = {"label": "settings X", "source": "bench/results/reproduce_x.json", "note": "best epoch 4",
                            "test": {"recall_all@20": 0.1745, "ndcg@20": 0.1450}}
    page = markdown(report)
    assert "test Recall@20 (hits / all held-out) | test NDCG@20 |" in page
    assert "| 0.1111 | 0.2222 |" in page and "| 0.1745 | 0.1450 | not paired" in page
    assert "carved out of the training users" in page and "best epoch 4" in page
