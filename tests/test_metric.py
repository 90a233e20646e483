"""Tests of the ``multimodal_accuracy`` evaluate module: offline load by path, hand-checked values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

evaluate = pytest.importorskip("evaluate")

from hf_dimml.metrics import MULTIMODAL_ACCURACY_PATH, load_multimodal_metric  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metric():
    return load_multimodal_metric()


def test_module_file_is_where_the_loader_points():
    assert (MULTIMODAL_ACCURACY_PATH / "multimodal_accuracy.py").is_file()


def test_one_import_per_line_in_the_module():
    """evaluate's import scanner misreads ``import a, b`` (docs/design.md §7)."""
    source = (MULTIMODAL_ACCURACY_PATH / "multimodal_accuracy.py").read_text()
    for line in source.splitlines():
        if line.startswith("import "):
            assert "," not in line, line


def test_accuracy_and_macro_f1_by_hand(metric):
    references = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    result = metric.compute(predictions=predictions, references=references)
    # per class: 0: TP1 FP1 FN1 -> 1/2 ; 1: TP2 FP1 FN0 -> 4/5 ; 2: TP1 FP0 FN1 -> 2/3
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert set(result) == {"accuracy", "macro_f1"}


def test_macro_f1_counts_a_class_never_predicted_as_zero(metric):
    references = [0, 1, 2, 2]
    predictions = [0, 1, 1, 1]  # class 2 is never predicted
    result = metric.compute(predictions=predictions, references=references)
    # 0: F1 1 ; 1: TP1 FP2 FN0 -> 2/4 ; 2: TP0 -> 0
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx((1 + 0.5 + 0) / 3)
    # an explicit label set adds classes absent from both (F1 0 each)
    widened = metric.compute(predictions=predictions, references=references, labels=[0, 1, 2, 3])
    assert widened["macro_f1"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)


def test_macro_f1_agrees_with_scikit_learn(metric):
    metrics = pytest.importorskip("sklearn.metrics")
    references = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]
    predictions = [3, 1, 4, 4, 5, 9, 2, 6, 3, 3, 5, 0, 9, 9]
    expected = metrics.f1_score(references, predictions, average="macro", zero_division=0)
    assert metric.compute(predictions=predictions, references=references)["macro_f1"] == pytest.approx(expected)


def test_per_modality_accuracy(metric):
    result = metric.compute(
        predictions=[0, 1, 2, 2],
        references=[0, 1, 2, 1],
        modality_predictions={"audio": [0, 1, 2, 1], "image": [1, 1, 0, 0]},
    )
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["accuracy_audio"] == pytest.approx(1.0)
    assert result["accuracy_image"] == pytest.approx(0.25)


def test_batches_accumulate(metric):
    metric.add_batch(predictions=[0, 1], references=[0, 1])
    metric.add_batch(predictions=[2, 2], references=[2, 0])
    result = metric.compute(modality_predictions={"audio": [0, 0, 0, 0]})
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["accuracy_audio"] == pytest.approx(0.5)


def test_modality_prediction_length_is_checked(metric):
    with pytest.raises(ValueError, match="image"):
        metric.compute(predictions=[0, 1], references=[0, 1], modality_predictions={"image": [0]})


def test_loads_offline_by_path_in_a_fresh_process(tmp_path):
    """No Hub: HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE set and an empty modules cache."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HOME=str(tmp_path / "hf_home"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    code = (
        "import evaluate, sys\n"
        f"metric = evaluate.load({str(MULTIMODAL_ACCURACY_PATH)!r})\n"
        "print(metric.compute(predictions=[1, 1], references=[1, 0])['accuracy'])\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "0.5"
