"""Peer comparison: our Mult-VAE against RecBole's MultiVAE and Cornac's VAECF (training speed, memory,
quality on the same split, scored by recvae.evaluation.metrics), our batch top-N against implicit ALS `recommend`, and
a torch.profiler breakdown of where our epoch's time goes (float32 and bf16 autocast).

Run with the project venv from the repository root:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/peers/run.py                  # ML-1M pro_sg, 20 epochs
    .venv/bin/python bench/peers/run.py --epochs 200                            # quality at the paper's 200
    .venv/bin/python bench/peers/run.py --datasets synthetic-ml20m --synthetic-epochs 1
    .venv/bin/python bench/peers/run.py --smoke      # ours only, tiny synthetic data in place of ML-1M, seconds

Each peer runs as a subprocess in its own virtual environment (bench/peers/.venv-recbole, .venv-cornac),
created here on first use from bench/peers/requirements-*.txt. Writes bench/results/peers.json and peers.md.
Modules: systems.py (the systems and how they run and are scored), venvs.py, flops.py, render.py (peers.md).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
import harness  # noqa: E402
from flops import PEAK_DTYPE, epoch_rate, matmul_peak  # noqa: E402
from render import render_markdown  # noqa: E402
from systems import OURS, PEERS, SYSTEMS, child_env, epoch_summary, one_line, run_system, score_quality  # noqa: E402
from venvs import ensure_venv  # noqa: E402

from recvae.config import TrainConfig  # noqa: E402
from recvae.data.snapshot import Snapshot  # noqa: E402

logger = logging.getLogger("bench.peers")

HERE = Path(__file__).resolve().parent
DATASETS = ("ml-1m-pro-sg", "synthetic-ml20m")
PROFILE_DATASET = "ml-1m-pro-sg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (with --smoke: ours alone on tiny data, one thread, 2 epochs)."""
    tc = TrainConfig()
    p = harness.parser(__doc__)
    p.add_argument("--results", dest="out", type=Path, help="the same as --out (where peers.json / peers.md go)")
    p.add_argument("--datasets", default="ml-1m-pro-sg", help=f"comma-separated, among {', '.join(DATASETS)}")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, among {', '.join(SYSTEMS)}")
    p.add_argument("--epochs", type=int, default=20, help="epochs on ML-1M (200 for the paper's quality)")
    p.add_argument("--synthetic-epochs", type=int, default=1, help="epochs on the ML-20M-shaped set (time/memory only)")
    p.add_argument("--skip-peers-on-synthetic", action="store_true", help="run only ours on the ML-20M-shaped set")
    p.add_argument("--work", type=Path, default=None,
                   help="keep exported splits, scores and logs here (default: a temp dir, removed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=tc.seed)
    p.add_argument("--batch-size", type=int, default=tc.batch_size)
    p.add_argument("--lr", type=float, default=tc.lr)
    p.add_argument("--anneal-cap", type=float, default=tc.anneal_cap)
    p.add_argument("--total-anneal-steps", type=int, default=tc.total_anneal_steps)
    p.add_argument("--synthetic-users", type=int, default=None,
                   help="override the ml-20m preset's user count (quick checks)")
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
    args = harness.parse(p, argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for d in args.datasets:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; choose among {', '.join(DATASETS)}")
    for s in args.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; choose among {', '.join(SYSTEMS)}")
    if args.smoke:  # ours on tiny data: the peers' venvs take minutes to install
        args.datasets, args.systems, args.epochs, args.threads = ["ml-1m-pro-sg"], ["ours"], 2, 1
        args.scoring_users, args.als_iterations = 200, 1
    return args


def load_dataset(name: str, args: argparse.Namespace) -> tuple[Snapshot, str, int, str]:
    """The data set's snapshot, where it came from, the epochs to train, and what the systems output."""
    if args.smoke:
        return harness.tiny_snapshot(), "tiny synthetic data (--smoke)", args.epochs, "scores"
    if name == "ml-1m-pro-sg":
        from recvae.data.readers import read_pro_sg

        folder = args.data_home / "ml-1m" / "pro_sg"
        return read_pro_sg(folder), f"{folder} (Liang et al. preprocessing)", args.epochs, "scores"
    snapshot, source = harness.synthetic_snapshot(args.seed, args.synthetic_heldout, args.synthetic_users)
    return snapshot, source, args.synthetic_epochs, "none"


def data_summary(snapshot: Snapshot, source: str) -> dict[str, Any]:
    """Where the data came from and its sizes, as peers.md shows them."""
    foldin, heldout = snapshot.heldout("test")
    return {"source": source, "train_users": int(snapshot.train.shape[0]), "n_items": snapshot.n_items,
            "train_nnz": int(snapshot.train.nnz), "test_users": int(foldin.shape[0]),
            "test_foldin_nnz": int(foldin.nnz), "test_heldout_nnz": int(heldout.nnz)}


def _ours_set(args: argparse.Namespace) -> list[str]:
    """peer_ours.py arguments for --ours-set."""
    return [arg for override in args.ours_set for arg in ("--set", override)]


def common_args(split_dir: Path, epochs: int, output: str, args: argparse.Namespace) -> list[str]:
    """The settings every system's script gets (peer_common.parser)."""
    return ["--data", str(split_dir), "--epochs", str(epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--hidden", "600", "--latent", "200", "--dropout", "0.5",
            "--anneal-cap", str(args.anneal_cap), "--total-anneal-steps", str(args.total_anneal_steps),
            "--seed", str(args.seed), "--threads", str(args.threads), "--output", output]


def system_command(system: str, out: Path, common: list[str], args: argparse.Namespace) -> list[str]:
    """How one system is started: ours with this Python, a peer with its venv's."""
    if system in OURS:
        amp, compiled = OURS[system]
        return [sys.executable, str(HERE / "peer_ours.py"), "--task", "train", "--amp", amp,
                *(["--compile"] * compiled), "--select-on", args.ours_select, "--out", str(out), *common,
                *_ours_set(args)]
    return [str(HERE / PEERS[system][1] / "bin" / "python"), str(HERE / PEERS[system][0]), "--out", str(out), *common]


def run_systems(name: str, snapshot: Snapshot, common: list[str], args: argparse.Namespace, work: Path,
                venvs: dict[str, Any]) -> dict[str, Any]:
    """Every system of args.systems on one data set: its result.json, epoch times and quality."""
    out_all: dict[str, Any] = {}
    env = child_env(args.threads)
    for system in args.systems:
        out = work / name / system
        if system not in OURS and name != "ml-1m-pro-sg" and args.skip_peers_on_synthetic:
            out_all[system] = {"ok": False, "skipped": "--skip-peers-on-synthetic"}
            continue
        if system not in OURS and "error" in venvs.get(system, {}):
            out_all[system] = {"ok": False, "error": f"venv: {venvs[system]['error'][:300]}"}
            continue
        result = run_system(system_command(system, out, common, args), out, env, args.timeout, cwd=out.parent)
        if result.get("ok"):
            result["epochs"] = epoch_summary(result.get("epoch_times_s", []))
            result["quality"] = score_quality(result, out, snapshot)
        else:
            logger.error("%s on %s failed: %s\n%s", system, name, result["error"], result["log_tail"])
        out_all[system] = result
        logger.info("%s on %s: %s", system, name, one_line(result))
    return out_all


def run_dataset(name: str, args: argparse.Namespace, work: Path, venvs: dict[str, Any],
                peaks: dict[str, Any]) -> dict[str, Any]:
    """Export the split, run every system on it, score their outputs, compare scoring speed, profile ours."""
    with harness.Timer() as t:
        snapshot, source, epochs, output = load_dataset(name, args)
        split_dir = snapshot.save(work / name / "split")
    logger.info("%s: snapshot %s exported to %s in %.1fs", name, snapshot.snapshot_id, split_dir, t.seconds)
    common = common_args(split_dir, epochs, output, args)
    ds: dict[str, Any] = {"name": name, "epochs": epochs, "data": data_summary(snapshot, source),
                          "snapshot_id": snapshot.snapshot_id,
                          "systems": run_systems(name, snapshot, common, args, work, venvs)}
    ours_ok = [s for s in args.systems if s in OURS and ds["systems"].get(s, {}).get("ok")]
    shape = (snapshot.train.shape[0], snapshot.n_items, snapshot.train.nnz)
    for system in ours_ok:
        median = ds["systems"][system]["epochs"].get("median_s")
        if median and not args.ours_set:  # the FLOP count is the paper architecture's
            ds.setdefault("flops", {})[system] = epoch_rate(shape, median, peaks.get(PEAK_DTYPE[OURS[system][0]]))
    env = child_env(args.threads)
    if not args.no_scoring and ours_ok:
        out = work / name / "scoring"
        models = [f"--model={s}={work / name / s / 'model'}" for s in ours_ok]
        cmd = [sys.executable, str(HERE / "peer_ours.py"), "--task", "scoring", "--out", str(out), *models,
               "--topk", "100", "--scoring-users", str(args.scoring_users), "--als-iterations",
               str(args.als_iterations), *common]
        ds["scoring"] = run_system(cmd, out, env, args.timeout, cwd=out.parent)
        if not ds["scoring"].get("ok"):
            logger.error("scoring comparison failed: %s\n%s", ds["scoring"]["error"], ds["scoring"]["log_tail"])
    if args.profile and name == PROFILE_DATASET and any(s in OURS for s in args.systems):
        ds["profile"] = profile_ours(name, common, args, work)
    return ds


def profile_ours(name: str, common: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Where ours' epoch time goes, float32 and bf16 side by side (float32 only with --smoke)."""
    profiles = {}
    for system, (amp, compiled) in OURS.items():
        if compiled or (args.smoke and system not in args.systems):  # compiled: the profiler would show the compiler
            continue
        out = work / name / f"profile-{system}"
        cmd = [sys.executable, str(HERE / "peer_ours.py"), "--task", "profile", "--amp", amp, "--out", str(out),
               *common, *_ours_set(args)]
        result = run_system(cmd, out, child_env(args.threads), args.timeout, cwd=out.parent)
        if not result.get("ok"):
            logger.error("profile of %s failed: %s\n%s", system, result["error"], result["log_tail"])
        profiles[system] = result
    return profiles


def prepare_peers(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The peers' venvs (or why not), and the matmul peaks of the precisions our systems train in."""
    venvs: dict[str, Any] = {}
    for peer in (s for s in args.systems if s in PEERS):
        try:
            venvs[peer] = ensure_venv(PEERS[peer][1], PEERS[peer][2], args.reinstall)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            logger.error("%s venv: %s", peer, exc)
            venvs[peer] = {"error": str(exc)}
    peaks: dict[str, Any] = {}
    if not args.no_peak:
        n, repeat = (256, 2) if args.smoke else (4096, 5)
        peaks["float32"] = matmul_peak(args.threads, n, repeat)
        if any(OURS.get(s, ("none",))[0] == "bf16" for s in args.systems):
            peaks["bfloat16"] = matmul_peak(args.threads, n, repeat, dtype="bfloat16")
    return venvs, peaks


def main(argv: list[str] | None = None) -> int:
    """Run every system on every data set; write peers.json and .md (exit 1 when a system failed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    report: dict[str, Any] = {
        "started_at": harness.now(), "command": harness.command_line(__file__, argv, env=("OPENBLAS_NUM_THREADS",)),
        "machine": harness.machine_info(("torch", "numpy", "scipy", "pandas", "implicit")),
        "settings": {"threads": args.threads, "batch_size": args.batch_size, "lr": args.lr, "hidden": 600,
                     "latent": 200, "dropout": 0.5, "anneal_cap": args.anneal_cap,
                     "total_anneal_steps": args.total_anneal_steps, "seed": args.seed, "epochs": args.epochs,
                     "synthetic_epochs": args.synthetic_epochs, "ours_select": args.ours_select,
                     "ours_set": args.ours_set}}
    report["venvs"], peaks = prepare_peers(args)
    report["matmul_peak"], report["matmul_peak_bf16"] = peaks.get("float32"), peaks.get("bfloat16")
    work = args.work or Path(tempfile.mkdtemp(prefix="recvae-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report["datasets"] = [run_dataset(name, args, work, report["venvs"], peaks) for name in args.datasets]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_avg_end"] = harness.load_average()
    report["finished_at"] = harness.now()
    js, md = harness.write_results(args.out, "peers", report, render_markdown(report))
    logger.info("wrote %s and %s", js, md)
    ok = all(r.get("ok") or r.get("skipped") for ds in report["datasets"] for r in ds["systems"].values())
    ok = ok and all(r.get("ok") for ds in report["datasets"] for r in ds.get("profile", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
