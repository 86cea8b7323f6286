"""bench/harness.py: the results pair every benchmark writes, its Markdown tables, command lines and options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import harness  # noqa: E402  (bench/ is not a package: importable only once on sys.path)


def test_write_results_writes_the_pair_with_the_command(tmp_path: Path) -> None:
    report = {"command": ".venv/bin/python bench/x.py --quick", "value": np.float32(0.5), "shape": (2, 3),
              "where": tmp_path}
    page = "# X\n\nCommand: `.venv/bin/python bench/x.py --quick`"
    js, md = harness.write_results(tmp_path / "out", "x", report, page)
    assert (js.name, md.name) == ("x.json", "x.md")
    assert json.loads(js.read_text()) == {**report, "value": 0.5, "shape": [2, 3], "where": str(tmp_path)}
    assert md.read_text().endswith("--quick`\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.json", "x.md"]  # no temporary files left


@pytest.mark.parametrize("report", [{}, {"command": "bench/x.py --other"}])
def test_write_results_refuses_a_page_without_its_command(tmp_path: Path, report: dict) -> None:
    with pytest.raises(ValueError, match="not on its Markdown page"):
        harness.write_results(tmp_path, "x", report, "# X\n\nCommand: `bench/x.py`\n")
    assert not list(tmp_path.iterdir())


def test_write_text_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = harness.write_text(tmp_path / "r.md", "old\n")
    with pytest.raises(TypeError):
        harness.write_text(path, 42)  # type: ignore[arg-type]  # the write fails after the temporary file exists
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_markdown_table_aligns_right_the_columns_asked() -> None:
    assert harness.markdown_table(["a", "b", "c"], [[1, "x", 2.5]], "lrr") == [
        "| a | b | c |", "|---|---:|---:|", "| 1 | x | 2.5 |"]
    assert harness.markdown_table(["a"], [])[1] == "|---|"


def test_command_line_quotes_arguments_and_names_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECVAE_DATA_HOME", "/data/my home")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    line = harness.command_line(harness.BENCH / "reproduce.py", ["--set", "train.lr=1e-3", "--models", "a b"],
                                env=("RECVAE_DATA_HOME", "OPENBLAS_NUM_THREADS"))
    assert line == ("RECVAE_DATA_HOME='/data/my home' .venv/bin/python bench/reproduce.py --set train.lr=1e-3 "
                    "--models 'a b'")


def test_parse_fills_out_and_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECVAE_DATA_HOME", str(tmp_path))
    p = harness.parser("Doc.\n\nMore.", quick="shorter")
    args = harness.parse(p, [])
    assert (args.out, args.data_home, args.quick, args.smoke) == (harness.RESULTS, tmp_path, False, False)
    smoke = harness.parse(p, ["--smoke", "--data-home", str(tmp_path / "d")])
    assert smoke.out == harness.SMOKE_OUT  # a smoke run never writes over the real results
    assert smoke.data_home == tmp_path / "d"
    assert harness.os.environ["RECVAE_DATA_HOME"] == str(tmp_path / "d")
    assert harness.parse(p, ["--out", str(tmp_path)]).out == tmp_path
    assert not hasattr(harness.parse(harness.parser(None, data_home=False), []), "data_home")


def test_describe_names_the_machine_of_new_and_older_reports() -> None:
    m = harness.machine_info(("numpy",), gpu=False)
    line = harness.describe(m)
    assert f"{m['cpus']} cores" in line and f"numpy {np.__version__}" in line and "no GPU" in line
    assert "7.5 GiB RAM" in harness.describe({"cpu": "X", "cpus": 2, "memory_gib": 7.5})


def test_timer_and_best_of() -> None:
    with harness.Timer() as t:
        sum(range(1000))
    assert t.seconds > 0
    calls = []
    best, value = harness.best_of(lambda: calls.append(1) or len(calls), 3)
    assert (value, len(calls)) == (3, 3) and best >= 0
