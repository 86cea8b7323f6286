"""What every benchmark shares: the machine it ran on, timing and peak memory, the command line that made its
figures, the common options, Markdown tables, tiny synthetic data for smoke runs, and writing
bench/results/<name>.json + <name>.md (bench/collect.py assembles bench/RESULTS.md from the .md files).

A new benchmark is a page:

    import harness

    def main(argv=None):
        args = harness.parse(harness.parser(__doc__), argv)
        with harness.Timer() as t:
            ...
        report = {"command": harness.command_line(__file__, argv), "date": harness.now(),
                  "machine": harness.machine_info(), "seconds": t.seconds}
        table = harness.markdown_table(["what", "seconds"], [["x", f"{t.seconds:.1f}"]])
        md = [*harness.header("My benchmark", report), *table]
        harness.write_results(args.out, "my_benchmark", report, "\\n".join(md) + "\\n")
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
SCRATCH = BENCH / "out"  # git-ignored: caches, work folders, smoke outputs
SMOKE_OUT = SCRATCH / "smoke"  # --smoke without --out: never over the real results
DEFAULT_DATA_HOME = REPO.parent / "shared" / "data"


def scratch_dir() -> Path:
    """bench/out, created (git ignores it, so a fresh clone has none)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return SCRATCH
GIB = 2**30
# the checkout's recvae is the one measured, even where another copy is installed in the environment
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ machine

DEFAULT_PACKAGES = ("torch", "numpy", "scipy")
# keys of machine_info() that are library versions, in the order describe() names them
VERSION_KEYS = ("torch", "numpy", "scipy", "pandas", "pyarrow", "implicit", "psycopg", "psutil", "sqlite")


def proc_field(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name."""
    return proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def ram_gib() -> float | None:
    """Total memory in GiB."""
    mem = proc_field("/proc/meminfo", "MemTotal")
    return round(int(mem.split()[0]) / 2**20, 1) if mem else None


def gpu_name() -> str | None:
    """The CUDA devices torch sees, or None (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def package_version(name: str) -> str | None:
    """An installed package's version, read from its metadata (importing nothing)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (a shared machine's timings are only as good as its load)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def git_commit() -> str | None:
    """The checkout's short commit, or None."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(packages: Sequence[str] = DEFAULT_PACKAGES, gpu: bool = True) -> dict[str, Any]:
    """CPU, cores, RAM, GPU (gpu=False: not looked up, torch stays unimported), OS, Python, the versions of
    `packages`, load average and commit: what the timings depend on."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": ram_gib(),
        "gpu": gpu_name() if gpu else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    info.update({name: package_version(name) for name in packages})
    info["load_average"] = load_average()
    info["git_commit"] = git_commit()
    return info


def describe(m: dict[str, Any]) -> str:
    """One line naming the machine of a report (older reports' `memory_gib` read as `ram_gib`)."""
    ram = m.get("ram_gib") or m.get("memory_gib")
    versions = ", ".join(f"{k} {m[k]}" for k in VERSION_KEYS if m.get(k))
    return (f"{m.get('cpu')}, {m.get('cpus')} cores, {ram} GiB RAM, {m.get('gpu') or 'no GPU'}; {m.get('platform')}; "
            f"Python {m.get('python')}" + (f", {versions}" if versions else ""))


def load_line(loads: Sequence[float] | None) -> str:
    """'1.00, 0.50, 0.25' (or '?')."""
    return ", ".join(f"{x:.2f}" for x in loads) if loads else "?"


# ------------------------------------------------------------------------------------------ time and memory


class Timer:
    """Wall seconds of a block: `with Timer() as t: ...`, then `t.seconds`."""

    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def best_of(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """The best wall seconds of `repeat` calls of `fn`, and the last call's value."""
    best, value = float("inf"), None
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value  # type: ignore[return-value]  # repeat >= 1: fn ran


def peak_rss_gib() -> float:
    """Peak RSS of this process so far, from getrusage (on Linux it starts from the spawning parent's peak)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def vm_hwm_gib() -> float:
    """Peak RSS of this process's own address space (/proc VmHWM): unlike ru_maxrss, not the parent's peak."""
    value = proc_field("/proc/self/status", "VmHWM")
    return int(value.split()[0]) / 2**20 if value else float("nan")


def current_rss_gib() -> float:
    """Resident set size now, from /proc (no psutil needed)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


class RssSampler:
    """Samples this process's RSS with psutil every `interval` seconds in a daemon thread (nothing without psutil)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        try:
            import psutil

            self._proc: Any = psutil.Process()
        except ImportError:
            self._proc = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, self._proc.memory_info().rss / GIB))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        if self._proc is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._stop.set()
            self._thread.join()

    def max(self) -> float | None:
        return max(r for _, r in self.samples) if self.samples else None

    def series(self, points: int = 60) -> list[list[float]]:
        """At most `points` samples [seconds, GiB], each the maximum of its stretch of time (so peaks survive)."""
        step = max(1, -(-len(self.samples) // points))
        return [[round(part[-1][0], 1), round(max(r for _, r in part), 3)]
                for part in (self.samples[i : i + step] for i in range(0, len(self.samples), step))]


# ------------------------------------------------------------------------------------------ command line


def parser(doc: str | None, *, data_home: bool = True, quick: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark takes: --out, --smoke, and --data-home (data_home=True)
    and --quick (when `quick` says what it does); the docstring's first paragraph is the description."""
    doc = doc or ""
    p = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()), epilog=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for the results (default {RESULTS.relative_to(REPO)}; with --smoke "
                        f"{SMOKE_OUT.relative_to(REPO)})")
    if data_home:
        p.add_argument("--data-home", type=Path, default=None,
                       help="datasets folder (default $RECVAE_DATA_HOME, else ../shared/data)")
    if quick:
        p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--smoke", action="store_true",
                   help="tiny synthetic data, a few seconds: checks that the script runs (the figures mean nothing)")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, then fill the defaults that depend on other options and the environment; --data-home is exported
    as RECVAE_DATA_HOME so recvae's dataset lookup and child processes see the same folder."""
    args = p.parse_args(argv)
    args.out = Path(args.out) if args.out else (SMOKE_OUT if args.smoke else RESULTS)
    if hasattr(args, "data_home"):
        args.data_home = Path(args.data_home or os.environ.get("RECVAE_DATA_HOME") or DEFAULT_DATA_HOME)
        os.environ["RECVAE_DATA_HOME"] = str(args.data_home)
    return args


def command_line(script: str | Path, argv: Sequence[str] | None = None, env: Sequence[str] = ()) -> str:
    """How to run this again: `[VAR=value ...] .venv/bin/python bench/<script> <args>`, shell-quoted, with the
    environment variables `env` that are set."""
    path = Path(script).resolve()
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    args = sys.argv[1:] if argv is None else list(argv)
    prefix = [f"{k}={shlex.quote(os.environ[k])}" for k in env if k in os.environ]
    return " ".join([*prefix, ".venv/bin/python", str(rel), *map(shlex.quote, args)])


def now() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- writing


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A GitHub Markdown table; `align` holds one letter per column, 'r' right-aligns it (default: left)."""
    marks = ["---:" if align[i:i + 1] == "r" else "---" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def header(title: str, report: dict[str, Any]) -> list[str]:
    """A results page's opening: its title, the command and date, and the machine."""
    m = report.get("machine") or {}
    return [f"# {title}", "", f"Command: `{report['command']}` ({report.get('date', '?')})", "",
            f"Machine: {describe(m)}; load average at start {load_line(m.get('load_average'))}.", ""]


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays (their values), tuples and sets (lists), paths and devices (text)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    return str(o)


def write_text(path: Path, text: str) -> Path:
    """Write a file whole: a temporary file beside it, then renamed over it (a crash leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_results(out: Path, name: str, report: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """<out>/<name>.json (the report) and <out>/<name>.md (its page); the page must show report['command'], the
    command that made the figures."""
    command = report.get("command")
    if not command or command not in markdown:
        raise ValueError(f"{name}: the report's command {command!r} is not on its Markdown page")
    js = write_text(Path(out) / f"{name}.json", json.dumps(report, indent=2, default=json_default) + "\n")
    md = write_text(Path(out) / f"{name}.md", markdown if markdown.endswith("\n") else markdown + "\n")
    return js, md


# ---------------------------------------------------------------------------------------------- smoke data


def tiny_snapshot(n_users: int = 600, n_items: int = 300, seed: int = 0) -> Any:
    """A small recvae.data.synthetic data set through `prepare` (rating > 3.5, >= 5 per user, strong split):
    the data of every --smoke run."""
    from recvae.data.prepare import prepare
    from recvae.data.readers import Source

    params = {"preset": "small", "n_users": n_users, "n_items": n_items, "seed": seed}
    return prepare(Source(format="synthetic", dataset="synthetic", synthetic=params))


def synthetic_snapshot(seed: int, n_heldout: int, n_users: int | None = None, preset: str = "ml-20m",
                       **overrides: Any) -> tuple[Any, str]:
    """recvae.data.synthetic's `preset` through the pipeline: rating > 3.5, >= 5 per user, strong split with
    `n_heldout` validation and test users each (at most a tenth of the users); and a line saying so."""
    from recvae.config import DataConfig, SplitConfig
    from recvae.data.preprocess import preprocess
    from recvae.data.split import strong_split
    from recvae.data.synthetic import generate

    if n_users is not None:
        overrides["n_users"] = n_users
    df, _ = preprocess(generate(preset, seed=seed, **overrides), DataConfig())
    n_heldout = min(n_heldout, df["user"].nunique() // 10)
    snap = strong_split(df, SplitConfig(n_heldout_users=n_heldout, seed=seed))
    extra = ", ".join(f"{k}={v}" for k, v in overrides.items())
    desc = f"recvae.data.synthetic {preset} preset" + (f" with {extra}" if extra else "")
    return snap, desc + ", rating > 3.5, >= 5 items per user, recvae.data.split.strong_split"
