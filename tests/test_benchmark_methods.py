"""benchmarks/benchmark_methods.py: the --quick benchmark writes the CSV, the Markdown table and the plot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "benchmark_methods.py"

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def load_script():
    from benchmarks import benchmark_methods

    return benchmark_methods


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("benchmark")
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output", str(output)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def test_quick_benchmark_writes_csv_with_one_row_per_method_and_seed(quick_run):
    with open(quick_run / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["method"], row["seed"]) for row in rows] == [("joint", "0"), ("dimml", "0")]
    expected = {
        "accuracy", "macro_f1", "accuracy_audio", "accuracy_image", "probe_accuracy_audio", "probe_accuracy_image",
        "subset_accuracy_audio", "subset_accuracy_image", "subset_accuracy_audio+image",
        "train_runtime_s", "wall_time_s", "cpu_time_s", "peak_rss_mib",
    }
    assert expected <= set(rows[0])
    for row in rows:
        for key in expected - {"train_runtime_s", "wall_time_s", "cpu_time_s", "peak_rss_mib"}:
            assert 0.0 <= float(row[key]) <= 1.0, (key, row[key])
        assert float(row["train_runtime_s"]) > 0
        assert float(row["wall_time_s"]) >= float(row["train_runtime_s"])
        assert float(row["cpu_time_s"]) > 0
        # The child's own peak: a training process that imports torch takes well over 100 MiB.
        assert 100 < float(row["peak_rss_mib"]) < 64 * 1024
        # Ten classes: the probe on a frozen, briefly trained encoder is still far above chance for image.
        assert float(row["probe_accuracy_image"]) > 0.2
        # Shapley values on accuracy add up to the full accuracy minus chance (10 classes).
        shapley = float(row["shapley_audio"]) + float(row["shapley_image"])
        assert abs(shapley - (float(row["subset_accuracy_audio+image"]) - 0.1)) < 1e-5  # CSV rounding


def test_quick_benchmark_writes_markdown_table_and_setup(quick_run):
    text = (quick_run / "results.md").read_text()
    header = ("| method | accuracy | macro-F1 | audio (method) | image (method) | audio (probe) | image (probe) "
              "| audio (Shapley) | image (Shapley) | train s | wall s | CPU s | peak RSS MiB |")
    assert header in text
    table_rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert any(line.startswith("| `joint` |") for line in table_rows)
    assert any(line.startswith("| `dimml` |") for line in table_rows)
    assert "python benchmarks/benchmark_methods.py --quick" in text
    assert "Machine:" in text and "Date:" in text and "image_energy=" in text
    assert "(competition.png)" in text


def test_quick_benchmark_writes_competition_png(quick_run):
    data = (quick_run / "competition.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_quick_benchmark_reuses_recorded_runs(quick_run):
    """--reuse rebuilds the outputs from the recorded runs without training again."""
    before = (quick_run / "results.csv").read_text()
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output", str(quick_run), "--reuse"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training ..." not in result.stdout and result.stdout.count("reused") == 2
    assert (quick_run / "results.csv").read_text() == before


def test_last_checkpoint_is_chosen_by_step_number(tmp_path):
    module = load_script()
    for step in (99, 165, 1155):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        history = [{"epoch": 1.0, "eval_accuracy": 0.5, "eval_accuracy_audio": 0.4, "step": step}]
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert module.last_checkpoint(tmp_path).name == "checkpoint-1155"  # not checkpoint-99 (lexicographic max)
    assert module.validation_history(tmp_path)[0]["step"] == 1155
    assert module.last_checkpoint(tmp_path / "missing") is None


def test_train_runtime_is_parsed_from_the_trainer_log():
    module = load_script()
    log = "{'loss': '1.2'}\n{'train_runtime': '163.4', 'train_samples_per_second': '385.5'}\n"
    assert module.parse_train_runtime(log) == pytest.approx(163.4)
    assert module.parse_train_runtime("nothing") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux exec/ru_maxrss semantics")
def test_peak_rss_of_the_child_is_not_the_parent_s(tmp_path):
    """On Linux exec keeps the replaced address space's peak RSS: a big parent must not inflate the child's."""
    module = load_script()
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page
    result = module.run_child([sys.executable, "-c", "pass"], tmp_path / "child.log")
    del ballast
    assert result["returncode"] == 0
    assert result["peak_rss_mib"] < 200
