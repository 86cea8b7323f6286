"""Peer comparison: our Mult-VAE against RecBole's MultiVAE and Cornac's VAECF (training speed, memory,
quality on the same split, scored by recvae.evaluation.metrics), our batch top-N against implicit ALS `recommend`, and
a torch.profiler breakdown of where our epoch's time goes (float32 and bf16 autocast).

Run with the project venv from the repository root:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/peers/run.py                  # ML-1M pro_sg, 20 epochs
    .venv/bin/python bench/peers/run.py --epochs 200                            # quality at the paper's 200
    .venv/bin/python bench/peers/run.py --datasets synthetic-ml20m --synthetic-epochs 1

Each peer runs as a subprocess in its own virtual environment (bench/peers/.venv-recbole, .venv-cornac),
created here on first use from bench/peers/requirements-*.txt. Writes bench/results/peers.json and peers.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from recvae.config import TrainConfig  # noqa: E402
from recvae.data.snapshot import Snapshot  # noqa: E402
from recvae.evaluation.metrics import DEFAULT_METRICS, evaluate  # noqa: E402

logger = logging.getLogger("bench.peers")

PEERS = {
    # name -> (script, venv folder, requirements file)
    "recbole": ("peer_recbole.py", ".venv-recbole", "requirements-recbole.txt"),
    "cornac": ("peer_cornac.py", ".venv-cornac", "requirements-cornac.txt"),
}
# our systems -> (train.amp, train.compile), passed as peer_ours.py --amp / --compile
OURS = {"ours": ("none", False), "ours-bf16": ("bf16", False), "ours-bf16-compile": ("bf16", True)}
SYSTEMS = ("ours", "ours-bf16", "ours-bf16-compile", "recbole", "cornac")
DATASETS = ("ml-1m-pro-sg", "synthetic-ml20m")
LABELS = {"ours": "ours (recvae MultVAE)", "ours-bf16": "ours (recvae MultVAE, bf16 autocast)",
          "ours-bf16-compile": "ours (recvae MultVAE, bf16 autocast, torch.compile)",
          "recbole": "RecBole MultiVAE", "cornac": "Cornac VAECF"}
PEAK_DTYPE = {"none": "float32", "bf16": "bfloat16"}  # train.amp -> the dtype of the matmul peak it is compared with
PROFILE_DATASET = "ml-1m-pro-sg"
VENV_STAMP = ".peers-installed.json"


# ------------------------------------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions, GPU: what the timings depend on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    gpu = None
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "scipy": scipy.__version__, "pandas": pd.__version__}
    try:
        import implicit

        versions["implicit"] = implicit.__version__
    except ImportError:
        pass
    commit = _git_commit()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": ram_gb,
        "gpu": gpu,
        "os": platform.platform(),
        "versions": versions,
        "git_commit": commit,
        "load_avg_start": list(os.getloadavg()),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def matmul_peak(threads: int, n: int = 4096, repeat: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Measured GEMM rate of torch.matmul (n x n, `dtype`) on `threads` threads: the machine's practical peak."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
        torch.matmul(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return {"n": n, "dtype": dtype, "threads": threads, "best_s": best, "gflops": 2 * n**3 / best / 1e9}


def epoch_flops(n_users: int, n_items: int, nnz: int, hidden: int, latent: int) -> dict[str, float]:
    """FLOPs of one Mult-VAE training epoch (forward + backward), dense-equivalent and sparse-input-aware.

    Layers I-H, H-2L (mean and log-variance), L-H, H-I. Backward costs a weight gradient for every layer and an
    input gradient for every layer but the first. The sparse count replaces the first layer's dense products
    (forward and weight gradient) by their non-zero work, 2 * nnz * H each.
    """
    fwd = 2 * n_users * (n_items * hidden + hidden * 2 * latent + latent * hidden + hidden * n_items)
    first = 2 * n_users * n_items * hidden
    dense = 3 * fwd - first
    sparse = dense - 2 * first + 2 * (2 * nnz * hidden)
    return {"dense_equivalent": float(dense), "sparse_input": float(sparse)}


# ---------------------------------------------------------------------------------------------------- data


def load_pro_sg(folder: Path) -> Snapshot:
    """ML-1M after Liang et al.'s preprocessing, read by the project's own pro_sg reader."""
    from recvae.data.readers import read_pro_sg

    return read_pro_sg(folder)


def synthetic_snapshot(seed: int, n_heldout: int, n_users: int | None = None) -> tuple[Snapshot, str]:
    """recvae.data.synthetic's ml-20m preset through our pipeline: rating > 3.5, >= 5 per user, strong split."""
    from recvae.config import DataConfig, SplitConfig
    from recvae.data.preprocess import preprocess
    from recvae.data.split import strong_split
    from recvae.data.synthetic import generate

    overrides: dict[str, Any] = {"seed": seed}
    if n_users is not None:
        overrides["n_users"] = n_users
    df = generate("ml-20m", **overrides)
    df, _ = preprocess(df, DataConfig())
    n_heldout = min(n_heldout, df["user"].nunique() // 10)
    snap = strong_split(df, SplitConfig(n_heldout_users=n_heldout, seed=seed))
    desc = "recvae.data.synthetic ml-20m preset" + (f" with n_users={n_users}" if n_users else "")
    return snap, desc + ", rating > 3.5, >= 5 items per user, recvae.data.split.strong_split"


# ----------------------------------------------------------------------------------------------- venvs


def ensure_venv(name: str, reinstall: bool = False) -> dict[str, Any]:
    """Create bench/peers/.venv-NAME from its requirements file unless an up-to-date one exists."""
    _, folder, req_name = PEERS[name]
    venv, req = HERE / folder, HERE / req_name
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = venv / VENV_STAMP
    if stamp.exists() and not reinstall:
        info = json.loads(stamp.read_text())
        if info.get("requirements_sha256") == digest and (venv / "bin" / "python").exists():
            _ignore_in_git(venv)
            return {**info, "installed_now": False}
    if venv.exists():
        shutil.rmtree(venv)
    python = shutil.which("python3.11") or sys.executable
    logger.info("creating %s with %s and installing %s (a minute or two)", venv, python, req.name)
    t = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    _ignore_in_git(venv)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(req)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install -r {req} into {venv} failed:\n{_tail(proc.stderr, 40)}")
    install_s = time.perf_counter() - t
    info = {
        "venv": str(venv.relative_to(REPO)),
        "requirements": str(req.relative_to(REPO)),
        "requirements_sha256": digest,
        "install_s": round(install_s, 1),
        "size_mb": round(_dir_size(venv) / 1024**2, 1),
        "python": subprocess.run([str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True).stdout.strip(),
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    stamp.write_text(json.dumps(info, indent=2))
    return {**info, "installed_now": True}


def _ignore_in_git(venv: Path) -> None:
    """A `*` .gitignore inside the venv (what Python 3.13's venv writes): git never sees it, the repo's .gitignore is untouched."""
    (venv / ".gitignore").write_text("# created by bench/peers/run.py\n*\n")


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# -------------------------------------------------------------------------------------------- running


def child_env(threads: int) -> dict[str, str]:
    """Environment of every system's process: the same thread counts for all."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": "1",  # STACK.md: implicit is slower with threaded OpenBLAS
        "TQDM_DISABLE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop("PYTHONPATH", None)
    return env


def run_system(cmd: list[str], out: Path, env: dict[str, str], timeout: float, cwd: Path) -> dict[str, Any]:
    """Run one system's script; its result.json, or the error and the end of its log."""
    out.mkdir(parents=True, exist_ok=True)
    logger.info("running: %s", shlex.join(cmd))
    t = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=cwd)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t
    log_text = (out / "log.txt").read_text(errors="replace")
    if rc != 0 or not (out / "result.json").exists():
        return {"ok": False, "error": f"exit {rc} after {wall:.0f}s", "log_tail": _tail(log_text, 25), "wall_s": wall}
    result = json.loads((out / "result.json").read_text())
    return {"ok": True, "wall_s": wall, **result}


class _RowScores:
    """score_fn for recvae.evaluation.metrics.evaluate over a system's saved test-user scores, consumed in row order."""

    def __init__(self, folder: Path, output: str, n_items: int) -> None:
        self.array = np.load(folder / output, mmap_mode="r")
        self.kind = "topk" if output.startswith("topk") else "scores"
        self.n_items, self.pos = n_items, 0

    def __call__(self, X: sp.csr_matrix) -> torch.Tensor:
        block = np.array(self.array[self.pos : self.pos + X.shape[0]])  # a writable copy: evaluate masks in place
        self.pos += X.shape[0]
        if self.kind == "scores":
            return torch.from_numpy(block.astype(np.float32, copy=False))
        # ranks to scores: the k-th best item gets K - k, every other item -inf
        s = torch.full((X.shape[0], self.n_items), -torch.inf)
        k = block.shape[1]
        s.scatter_(1, torch.from_numpy(block.astype(np.int64)), torch.arange(k, 0, -1, dtype=torch.float32).expand(X.shape[0], k))
        return s


def score_quality(result: dict[str, Any], folder: Path, snapshot: Snapshot) -> dict[str, Any] | None:
    """NDCG@100 / Recall@20 / Recall@50 (recvae.evaluation.metrics) of a system's test-user scores."""
    if not result.get("ok") or not result.get("output"):
        return None
    foldin, heldout = snapshot.heldout("test")
    fn = _RowScores(folder, result["output"], snapshot.n_items)
    if fn.array.shape[0] != foldin.shape[0]:
        raise ValueError(f"{folder / result['output']}: {fn.array.shape[0]} rows for {foldin.shape[0]} test users")
    ev = evaluate(fn, foldin, heldout, DEFAULT_METRICS)
    return {"means": ev.means, "stderr": ev.stderr, "n_users": ev.n_users}


def epoch_summary(times: list[float]) -> dict[str, Any]:
    """First epoch apart; median of the others (the steady state) when there are any."""
    if not times:
        return {"epochs": 0}
    steady = times[1:] if len(times) > 1 else times
    return {"epochs": len(times), "first_s": times[0], "median_s": float(np.median(steady)),
            "min_s": float(np.min(steady)), "total_s": float(np.sum(times))}


# ------------------------------------------------------------------------------------------------ report


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def render_markdown(report: dict[str, Any]) -> str:
    """A readable peers.md from the report dict."""
    m = report["machine"]
    lines = [
        "# Peer comparison: Mult-VAE implementations",
        "",
        f"Generated {report['finished_at']} by `bench/peers/run.py` (commit {m.get('git_commit') or '?'}).",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), RAM {m['ram_gb']} GB, GPU: {m['gpu'] or 'none'}",
        f"- {m['os']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- threads per system: {report['settings']['threads']}; load average at start {', '.join(f'{x:.2f}' for x in m['load_avg_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in report.get('load_avg_end', []))} (above the core count means the timings are noisy)",
    ]
    for key in ("matmul_peak", "matmul_peak_bf16"):
        if report.get(key):
            p = report[key]
            lines.append(f"- measured peak: torch.matmul {p['n']}x{p['n']} {p.get('dtype', 'float32')} on {p['threads']} threads "
                         f"= {p['gflops']:.1f} GFLOP/s (best of 5)")
    s = report["settings"]
    lines += [
        "",
        "## Settings (the same for every system)",
        "",
        f"I-{s['hidden']}-{s['latent']}-{s['hidden']}-I, tanh, input dropout {s['dropout']}, batch {s['batch_size']} users, "
        f"Adam lr {s['lr']}, beta annealed linearly to {s['anneal_cap']} over {s['total_anneal_steps']} updates, seed {s['seed']}; "
        "every system's LAST epoch is evaluated (no epoch selection"
        + ("" if s.get("ours_select", "none") == "none" else "; ours: best epoch on validation NDCG@100, see notes")
        + ") by `recvae.evaluation.metrics` on the test users' held-out items, scored from their fold-in rows with fold-in items excluded."
        + (f" Ours with `{' '.join(s['ours_set'])}` on top (`--ours-set`): not the peers' architecture."
           if s.get("ours_set") else ""),
    ]
    for ds in report["datasets"]:
        lines += ["", f"## {ds['name']}", ""]
        d = ds["data"]
        lines.append(f"Source: {d['source']}. Train {d['train_users']:,} users x {d['n_items']:,} items, {d['train_nnz']:,} interactions; "
                     f"{d['test_users']:,} test users (fold-in {d['test_foldin_nnz']:,} / held-out {d['test_heldout_nnz']:,}). "
                     f"{ds['epochs']} epoch(s).")
        lines += ["", "| system | s/epoch (median) | first epoch s | setup s | peak RSS MB | NDCG@100 | Recall@20 | Recall@50 | fold-in |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in ds["systems"].items():
            if not r.get("ok"):
                why = f"skipped ({r['skipped']})" if r.get("skipped") else f"failed: {r.get('error', '?')}"
                lines.append(f"| {LABELS.get(name, name)} | {why} | | | | | | | |")
                continue
            e, q = r["epochs"], (r.get("quality") or {}).get("means", {})
            lines.append(
                f"| {LABELS.get(name, name)} | {_f(e.get('median_s'), 2)} | {_f(e.get('first_s'), 2)} | {_f(r.get('setup_s'), 1)} | "
                f"{_f(r.get('peak_rss_mb'), 0)} | {_f(q.get('ndcg@100'))} | {_f(q.get('recall@20'))} | {_f(q.get('recall@50'))} | {r.get('foldin', '')} |"
            )
        lines += _render_flops(ds)
        notes = [f"{LABELS.get(n, n)}: {x}" for n, r in ds["systems"].items() for x in r.get("notes", [])]
        if notes:
            lines += ["", "Notes:", ""] + [f"- {x}" for x in notes]
        lines += _render_scoring(ds)
        lines += _render_profile(ds)
    if report.get("venvs"):
        lines += ["", "## Peer environments", "", "| peer | venv | install s | size MB | installed in this run |", "|---|---|---|---|---|"]
        for name, v in report["venvs"].items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error'][:200]} | | | |")
            else:
                lines.append(f"| {name} | `{v['venv']}` ({v['requirements']}) | {v['install_s']} | {v['size_mb']} | {v['installed_now']} |")
    return "\n".join(lines) + "\n"


def _render_flops(ds: dict[str, Any]) -> list[str]:
    """One sentence per our system: GFLOP per epoch and the share of the matmul peak of its precision."""
    lines: list[str] = []
    for system, fl in (ds.get("flops") or {}).items():
        peak = f"the measured {fl['peak_dtype']} matmul peak" if fl.get("peak_dtype") else "the matmul peak (not measured)"
        lines += ["", f"{LABELS.get(system, system)}, one training epoch: {fl['dense_equivalent'] / 1e9:.1f} GFLOP dense-equivalent "
                  f"({fl['sparse_input'] / 1e9:.1f} GFLOP counting the sparse first layer's non-zeros only); at the median "
                  f"{_f(fl.get('epoch_s'), 2)} s/epoch that is {_f(fl.get('dense_gflops'), 1)} GFLOP/s dense-equivalent = "
                  f"{_f(fl.get('dense_ratio'), 2)} of {peak} ({_f(fl.get('sparse_gflops'), 1)} GFLOP/s = "
                  f"{_f(fl.get('sparse_ratio'), 2)} counting useful work only)."]
    return lines


def _render_scoring(ds: dict[str, Any]) -> list[str]:
    """implicit ALS recommend against each of our trained models, one column each, on the same users."""
    sc = ds.get("scoring")
    if not sc:
        return []
    if not sc.get("ok"):
        return ["", f"Scoring comparison failed: {sc.get('error')}"]
    als = sc["implicit_als"]
    names = list(sc["rows"][0].get("models", {}))
    lines = ["", f"Top-{sc['rows'][0]['N']} scoring, seen items filtered, {sc['threads']} threads, OPENBLAS_NUM_THREADS=1, best of "
             f"{sc.get('repeat', '?')} (implicit ALS {als['factors']} factors, fit {als['fit_s']:.1f}s; ours: {sc['ours_path']}, "
             "each model scoring at its training precision):", "",
             "| users | n | implicit ALS recommend users/s | " + " | ".join(f"{n} users/s" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for row in sc["rows"]:
        cells = [f"{row['models'][n]['users_per_s']:,.0f}" for n in names]
        lines.append(f"| {row['users']} | {row['n_users']:,} | {row['als_users_per_s']:,.0f} | " + " | ".join(cells) + " |")
    return lines


def _render_profile(ds: dict[str, Any]) -> list[str]:
    """Where an epoch's time goes, float32 and bf16 side by side (peer_ours.py --task profile)."""
    prof = ds.get("profile")
    if not prof:
        return []
    lines = ["", f"### Where the time goes (ours, {ds['name']}, torch.profiler)", ""]
    good = {s: r for s, r in prof.items() if r.get("ok")}
    for s, r in prof.items():
        if not r.get("ok"):
            lines.append(f"- profile of {LABELS.get(s, s)} failed: {r.get('error')}")
    if not good:
        return lines
    first = next(iter(good.values()))
    lines += [f"`recvae.training.loop.fit_model` under `torch.profiler.profile(activities=[CPU])`, {first['threads']} threads: "
              f"{first['warmup_epochs']} warm-up epoch, then the self CPU time of every op over {first['profiled_epochs']} "
              "profiled epochs, by category (classification in bench/peers/README.md). The profiler slows the epoch "
              "somewhat: compare the epoch row with the unprofiled s/epoch above.", ""]
    names = list(good)
    lines += ["| category | " + " | ".join(f"{n} s/epoch | {n} share" for n in names) + " |",
              "|---|" + "---|---|" * len(names)]
    cats = list(first["categories"])
    for c in cats:
        cells = []
        for n in names:
            v = good[n]["categories"].get(c, {})
            cells += [_f(v.get("s_per_epoch"), 3), f"{100 * v.get('share', 0.0):.1f}%"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("| **epoch (profiled window)** | " + " | ".join(f"**{_f(good[n]['epoch_wall_s'], 3)}** | 100%" for n in names) + " |")
    return lines


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    tc = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="ml-1m-pro-sg", help=f"comma-separated, among {', '.join(DATASETS)}")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, among {', '.join(SYSTEMS)}")
    p.add_argument("--epochs", type=int, default=20, help="epochs on ML-1M (200 for the paper's quality)")
    p.add_argument("--synthetic-epochs", type=int, default=1, help="epochs on the ML-20M-shaped set (time/memory only)")
    p.add_argument("--skip-peers-on-synthetic", action="store_true", help="run only ours on the ML-20M-shaped set")
    p.add_argument("--data-home", type=Path, default=Path(os.environ.get("RECVAE_DATA_HOME", REPO.parent / "shared" / "data")))
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="where peers.json / peers.md go")
    p.add_argument("--work", type=Path, default=None, help="keep exported splits, scores and logs here (default: a temp dir, removed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=tc.seed)
    p.add_argument("--batch-size", type=int, default=tc.batch_size)
    p.add_argument("--lr", type=float, default=tc.lr)
    p.add_argument("--anneal-cap", type=float, default=tc.anneal_cap)
    p.add_argument("--total-anneal-steps", type=int, default=tc.total_anneal_steps)
    p.add_argument("--synthetic-users", type=int, default=None, help="override the ml-20m preset's user count (quick checks)")
    p.add_argument("--synthetic-heldout", type=int, default=10_000, help="validation and test users each")
    p.add_argument("--ours-select", choices=("none", "validation"), default="none",
                   help="ours: last epoch (none, as the peers) or the best epoch on validation NDCG@100")
    p.add_argument("--ours-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override ours' config (e.g. model.hidden_dims= for the one-layer model); the peers keep the "
                        "paper's architecture, so use it for ours-against-ALS scoring, not the peer table")
    p.add_argument("--no-scoring", action="store_true", help="skip the implicit ALS recommend comparison")
    p.add_argument("--scoring-users", type=int, default=10_000)
    p.add_argument("--als-iterations", type=int, default=15)
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peaks (float32, bfloat16) / FLOP/s ratios")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                   help=f"on {PROFILE_DATASET}: where ours' epoch time goes, float32 and bf16 (torch.profiler, "
                        "1 warm-up + 2 profiled epochs each); --no-profile skips it")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per system run")
    p.add_argument("--reinstall", action="store_true", help="recreate the peers' venvs")
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for d in args.datasets:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; choose among {', '.join(DATASETS)}")
    for s in args.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; choose among {', '.join(SYSTEMS)}")
    return args


def data_summary(snapshot: Snapshot, source: str) -> dict[str, Any]:
    foldin, heldout = snapshot.heldout("test")
    return {"source": source, "train_users": int(snapshot.train.shape[0]), "n_items": snapshot.n_items,
            "train_nnz": int(snapshot.train.nnz), "test_users": int(foldin.shape[0]),
            "test_foldin_nnz": int(foldin.nnz), "test_heldout_nnz": int(heldout.nnz)}


def _ours_set(args: argparse.Namespace) -> list[str]:
    """peer_ours.py arguments for --ours-set."""
    return [arg for override in args.ours_set for arg in ("--set", override)]


def run_dataset(name: str, args: argparse.Namespace, work: Path, venvs: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    """Export the split, run every system on it, score their outputs, compare scoring speed, profile ours."""
    t = time.perf_counter()
    if name == "ml-1m-pro-sg":
        folder = args.data_home / "ml-1m" / "pro_sg"
        snapshot, source = load_pro_sg(folder), f"{folder} (Liang et al. preprocessing)"
        epochs, output = args.epochs, "scores"
    else:
        snapshot, source = synthetic_snapshot(args.seed, args.synthetic_heldout, args.synthetic_users)
        epochs, output = args.synthetic_epochs, "none"
    split_dir = snapshot.save(work / name / "split")
    logger.info("%s: snapshot %s exported to %s in %.1fs", name, snapshot.snapshot_id, split_dir, time.perf_counter() - t)
    ds: dict[str, Any] = {"name": name, "epochs": epochs, "data": data_summary(snapshot, source), "snapshot_id": snapshot.snapshot_id,
                          "systems": {}}
    env = child_env(args.threads)
    common = ["--data", str(split_dir), "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
              "--hidden", "600", "--latent", "200", "--dropout", "0.5", "--anneal-cap", str(args.anneal_cap),
              "--total-anneal-steps", str(args.total_anneal_steps), "--seed", str(args.seed), "--threads", str(args.threads),
              "--output", output]
    for system in args.systems:
        out = work / name / system
        if system not in OURS and name != "ml-1m-pro-sg" and args.skip_peers_on_synthetic:
            ds["systems"][system] = {"ok": False, "skipped": "--skip-peers-on-synthetic"}
            continue
        if system in OURS:
            amp, compiled = OURS[system]
            cmd = [sys.executable, str(HERE / "peer_ours.py"), "--task", "train", "--amp", amp, *(["--compile"] * compiled),
                   "--select-on", args.ours_select, "--out", str(out), *common, *_ours_set(args)]
        else:
            if "error" in venvs.get(system, {}):
                ds["systems"][system] = {"ok": False, "error": f"venv: {venvs[system]['error'][:300]}"}
                continue
            cmd = [str(HERE / PEERS[system][1] / "bin" / "python"), str(HERE / PEERS[system][0]), "--out", str(out), *common]
        result = run_system(cmd, out, env, args.timeout, cwd=out.parent)
        if result.get("ok"):
            result["epochs"] = epoch_summary(result.get("epoch_times_s", []))
            result["quality"] = score_quality(result, out, snapshot)
        else:
            logger.error("%s on %s failed: %s\n%s", system, name, result["error"], result["log_tail"])
        ds["systems"][system] = result
        logger.info("%s on %s: %s", system, name, _one_line(result))
    ours_ok = [s for s in args.systems if s in OURS and ds["systems"].get(s, {}).get("ok")]
    for system in ours_ok:
        median = ds["systems"][system]["epochs"].get("median_s")
        if not median or args.ours_set:  # the FLOP count is the paper architecture's
            continue
        fl = epoch_flops(snapshot.train.shape[0], snapshot.n_items, snapshot.train.nnz, 600, 200)
        fl["epoch_s"] = median
        fl["dense_gflops"] = fl["dense_equivalent"] / fl["epoch_s"] / 1e9
        fl["sparse_gflops"] = fl["sparse_input"] / fl["epoch_s"] / 1e9
        peak = peaks.get(PEAK_DTYPE[OURS[system][0]])
        if peak:
            fl["peak_dtype"] = peak["dtype"]
            fl["peak_gflops"] = peak["gflops"]
            fl["dense_ratio"] = fl["dense_gflops"] / peak["gflops"]
            fl["sparse_ratio"] = fl["sparse_gflops"] / peak["gflops"]
        ds.setdefault("flops", {})[system] = fl
    if not args.no_scoring and ours_ok:
        out = work / name / "scoring"
        models = [f"--model={s}={work / name / s / 'model'}" for s in ours_ok]
        cmd = [sys.executable, str(HERE / "peer_ours.py"), "--task", "scoring", "--out", str(out), *models,
               "--topk", "100", "--scoring-users", str(args.scoring_users), "--als-iterations", str(args.als_iterations), *common]
        ds["scoring"] = run_system(cmd, out, env, args.timeout, cwd=out.parent)
        if not ds["scoring"].get("ok"):
            logger.error("scoring comparison failed: %s\n%s", ds["scoring"]["error"], ds["scoring"]["log_tail"])
    if args.profile and name == PROFILE_DATASET and any(s in OURS for s in args.systems):  # both precisions, side by side
        ds["profile"] = {}
        for system, (amp, compiled) in OURS.items():
            if compiled:  # the profiler would mostly show the compiler's own work
                continue
            out = work / name / f"profile-{system}"
            cmd = [sys.executable, str(HERE / "peer_ours.py"), "--task", "profile", "--amp", amp, "--out", str(out), *common,
                   *_ours_set(args)]
            result = run_system(cmd, out, env, args.timeout, cwd=out.parent)
            if not result.get("ok"):
                logger.error("profile of %s failed: %s\n%s", system, result["error"], result["log_tail"])
            ds["profile"][system] = result
    return ds


def _one_line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return r.get("error", "failed")
    q = (r.get("quality") or {}).get("means", {})
    text = f"median {r['epochs'].get('median_s', float('nan')):.2f}s/epoch, peak RSS {r.get('peak_rss_mb')} MB"
    return text + (f", NDCG@100 {q['ndcg@100']:.4f}" if "ndcg@100" in q else "")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    command = "OPENBLAS_NUM_THREADS=1 " + shlex.join([".venv/bin/python", "bench/peers/run.py", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {"started_at": started, "command": command, "machine": machine_info(), "venvs": {}}
    report["settings"] = {"threads": args.threads, "batch_size": args.batch_size, "lr": args.lr, "hidden": 600, "latent": 200,
                          "dropout": 0.5, "anneal_cap": args.anneal_cap, "total_anneal_steps": args.total_anneal_steps,
                          "seed": args.seed, "epochs": args.epochs, "synthetic_epochs": args.synthetic_epochs,
                          "ours_select": args.ours_select, "ours_set": args.ours_set}
    for peer in (s for s in args.systems if s in PEERS):
        try:
            report["venvs"][peer] = ensure_venv(peer, args.reinstall)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            logger.error("%s venv: %s", peer, exc)
            report["venvs"][peer] = {"error": str(exc)}
    peaks: dict[str, Any] = {}
    if not args.no_peak:
        peaks["float32"] = matmul_peak(args.threads)
        if any(OURS.get(s, ("none",))[0] == "bf16" for s in args.systems):
            peaks["bfloat16"] = matmul_peak(args.threads, dtype="bfloat16")
    report["matmul_peak"] = peaks.get("float32")
    report["matmul_peak_bf16"] = peaks.get("bfloat16")
    work = args.work or Path(tempfile.mkdtemp(prefix="recvae-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report["datasets"] = [run_dataset(name, args, work, report["venvs"], peaks) for name in args.datasets]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_avg_end"] = list(os.getloadavg())
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "peers.json").write_text(json.dumps(report, indent=2, default=str))
    (args.results / "peers.md").write_text(render_markdown(report))
    logger.info("wrote %s and %s", args.results / "peers.json", args.results / "peers.md")
    ok = all(r.get("ok") or r.get("skipped") for ds in report["datasets"] for r in ds["systems"].values())
    ok = ok and all(r.get("ok") for ds in report["datasets"] for r in ds.get("profile", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
