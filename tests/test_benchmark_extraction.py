"""benchmarks/benchmark_extraction.py at its smallest size: it runs and prints a table of positive figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_extraction_quick_prints_positive_figures() -> None:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "benchmark_extraction.py"), "--quick"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    labels = [row.split("|")[1].strip() for row in rows]
    assert [label.split(" (")[0].split(",")[0] for label in labels[:2]] == ["extraction"] * 2, labels
    assert "1 worker" in labels[0] and "2 workers" in labels[1]
    assert labels[2].startswith("loading a cached sample") and labels[3].startswith("decoding the sample")
    for row in rows:
        value, ratio = (cell.strip() for cell in row.split("|")[2:4])
        number = float(re.match(r"[0-9.]+", value).group())
        assert number > 0, row
        assert float(re.match(r"[0-9.]+", ratio).group()) > 0, row
    assert "clips/s" in rows[0] and "clips/s" in rows[1] and " ms " in rows[2] and " ms " in rows[3]
