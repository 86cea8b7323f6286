"""peers.md from the report that run.py builds: machine, settings, one section per data set (systems, FLOP rates,
scoring against implicit ALS, where the epoch's time goes), the peers' environments."""

from __future__ import annotations

from typing import Any

import harness
import numpy as np
from systems import LABELS


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
        f"- {harness.describe(m)}; {m.get('cpus_usable')} cores usable",
        f"- threads per system: {report['settings']['threads']}; load average at start "
        f"{harness.load_line(m.get('load_average'))}, at end {harness.load_line(report.get('load_avg_end'))} "
        "(above the core count means the timings are noisy)",
    ]
    for key in ("matmul_peak", "matmul_peak_bf16"):
        if report.get(key):
            p = report[key]
            lines.append(f"- measured peak: torch.matmul {p['n']}x{p['n']} {p.get('dtype', 'float32')} on "
                         f"{p['threads']} threads = {p['gflops']:.1f} GFLOP/s (best of {p.get('repeat', 5)})")
    lines += _render_settings(report["settings"])
    for ds in report["datasets"]:
        lines += _render_dataset(ds)
    if report.get("venvs"):
        lines += ["", "## Peer environments", "", "| peer | venv | install s | size MB | installed in this run |",
                  "|---|---|---|---|---|"]
        for name, v in report["venvs"].items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error'][:200]} | | | |")
            else:
                lines.append(f"| {name} | `{v['venv']}` ({v['requirements']}) | {v['install_s']} | {v['size_mb']} | "
                             f"{v['installed_now']} |")
    return "\n".join(lines) + "\n"


def _render_settings(s: dict[str, Any]) -> list[str]:
    """What every system was given."""
    return [
        "",
        "## Settings (the same for every system)",
        "",
        f"I-{s['hidden']}-{s['latent']}-{s['hidden']}-I, tanh, input dropout {s['dropout']}, batch {s['batch_size']} "
        f"users, Adam lr {s['lr']}, beta annealed linearly to {s['anneal_cap']} over {s['total_anneal_steps']} "
        f"updates, seed {s['seed']}; every system's LAST epoch is evaluated (no epoch selection"
        + ("" if s.get("ours_select", "none") == "none" else "; ours: best epoch on validation NDCG@100, see notes")
        + ") by `recvae.evaluation.metrics` on the test users' held-out items, scored from their fold-in rows with "
        "fold-in items excluded."
        + (f" Ours with `{' '.join(s['ours_set'])}` on top (`--ours-set`): not the peers' architecture."
           if s.get("ours_set") else ""),
    ]


def _render_dataset(ds: dict[str, Any]) -> list[str]:
    """One data set's section: its systems' speed, memory and quality, then FLOPs, notes, scoring and profile."""
    d = ds["data"]
    lines = ["", f"## {ds['name']}", "",
             f"Source: {d['source']}. Train {d['train_users']:,} users x {d['n_items']:,} items, {d['train_nnz']:,} "
             f"interactions; {d['test_users']:,} test users (fold-in {d['test_foldin_nnz']:,} / held-out "
             f"{d['test_heldout_nnz']:,}). {ds['epochs']} epoch(s).",
             "", "| system | s/epoch (median) | first epoch s | setup s | peak RSS MB | NDCG@100 | Recall@20 | "
             "Recall@50 | fold-in |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in ds["systems"].items():
        if not r.get("ok"):
            why = f"skipped ({r['skipped']})" if r.get("skipped") else f"failed: {r.get('error', '?')}"
            lines.append(f"| {LABELS.get(name, name)} | {why} | | | | | | | |")
            continue
        e, q = r["epochs"], (r.get("quality") or {}).get("means", {})
        lines.append(
            f"| {LABELS.get(name, name)} | {_f(e.get('median_s'), 2)} | {_f(e.get('first_s'), 2)} | "
            f"{_f(r.get('setup_s'), 1)} | {_f(r.get('peak_rss_mb'), 0)} | {_f(q.get('ndcg@100'))} | "
            f"{_f(q.get('recall@20'))} | {_f(q.get('recall@50'))} | {r.get('foldin', '')} |"
        )
    lines += _render_flops(ds)
    notes = [f"{LABELS.get(n, n)}: {x}" for n, r in ds["systems"].items() for x in r.get("notes", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {x}" for x in notes]
    return lines + _render_scoring(ds) + _render_profile(ds)


def _render_flops(ds: dict[str, Any]) -> list[str]:
    """One sentence per our system: GFLOP per epoch and the share of the matmul peak of its precision."""
    lines: list[str] = []
    for system, fl in (ds.get("flops") or {}).items():
        peak = (f"the measured {fl['peak_dtype']} matmul peak" if fl.get("peak_dtype")
                else "the matmul peak (not measured)")
        lines += ["", f"{LABELS.get(system, system)}, one training epoch: {fl['dense_equivalent'] / 1e9:.1f} GFLOP "
                  f"dense-equivalent ({fl['sparse_input'] / 1e9:.1f} GFLOP counting the sparse first layer's non-zeros "
                  f"only); at the median {_f(fl.get('epoch_s'), 2)} s/epoch that is {_f(fl.get('dense_gflops'), 1)} "
                  f"GFLOP/s dense-equivalent = {_f(fl.get('dense_ratio'), 2)} of {peak} "
                  f"({_f(fl.get('sparse_gflops'), 1)} GFLOP/s = {_f(fl.get('sparse_ratio'), 2)} counting useful work "
                  "only)."]
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
    lines = ["", f"Top-{sc['rows'][0]['N']} scoring, seen items filtered, {sc['threads']} threads, "
             f"OPENBLAS_NUM_THREADS=1, best of {sc.get('repeat', '?')} (implicit ALS {als['factors']} factors, fit "
             f"{als['fit_s']:.1f}s; ours: {sc['ours_path']}, each model scoring at its training precision):", "",
             "| users | n | implicit ALS recommend users/s | " + " | ".join(f"{n} users/s" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for row in sc["rows"]:
        cells = [f"{row['models'][n]['users_per_s']:,.0f}" for n in names]
        lines.append(f"| {row['users']} | {row['n_users']:,} | {row['als_users_per_s']:,.0f} | "
                     + " | ".join(cells) + " |")
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
    lines += [f"`recvae.training.loop.fit_model` under `torch.profiler.profile(activities=[CPU])`, {first['threads']} "
              f"threads: {first['warmup_epochs']} warm-up epoch, then the self CPU time of every op over "
              f"{first['profiled_epochs']} profiled epochs, by category (classification in bench/peers/README.md). "
              "The profiler slows the epoch somewhat: compare the epoch row with the unprofiled s/epoch above.", ""]
    names = list(good)
    lines += ["| category | " + " | ".join(f"{n} s/epoch | {n} share" for n in names) + " |",
              "|---|" + "---|---|" * len(names)]
    for c in first["categories"]:
        cells = []
        for n in names:
            v = good[n]["categories"].get(c, {})
            cells += [_f(v.get("s_per_epoch"), 3), f"{100 * v.get('share', 0.0):.1f}%"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("| **epoch (profiled window)** | "
                 + " | ".join(f"**{_f(good[n]['epoch_wall_s'], 3)}** | 100%" for n in names) + " |")
    return lines
