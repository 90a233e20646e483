"""The Python example of docs/python_api.md runs as written (in a temporary folder) and trains a useful model."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"


def test_the_documented_python_example_trains_and_saves(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)\n```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    metrics = namespace["metrics"]
    assert metrics["eval_accuracy"] > 0.6  # chance is 1/3; modality `a` alone is informative
    assert {"eval_accuracy_a", "eval_accuracy_b", "eval_accuracy_subset_a+b", "eval_macro_f1"} <= set(metrics)
    saved = tmp_path / "outputs" / "python-api"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in saved.iterdir()}
