"""Checkpoints saved by hf_dimml 0.1 (before the method registry; tests/fixtures/checkpoints_v0_1, one tiny model per
method, written with training knobs in the config and training state as buffers) still load and predict the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_dimml import DIMMLForMultimodalClassification

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints_v0_1"


@pytest.mark.parametrize("method", ["dimml", "mla", "dmrnet", "joint", "unimodal"])
def test_old_checkpoint_loads_and_predicts_the_same(method):
    folder = FIXTURES / method
    expected = json.loads((folder / "expected_logits.json").read_text())
    model = DIMMLForMultimodalClassification.from_pretrained(folder).eval()
    assert model.config.method == method
    inputs = {name: torch.tensor(value) for name, value in expected["inputs"].items()}
    with torch.no_grad():
        for case, kwargs in {"all": inputs, "a": {"a": inputs["a"]}, "b": {"b": inputs["b"]}}.items():
            logits = model(**kwargs).logits
            torch.testing.assert_close(logits, torch.tensor(expected["logits"][case]), rtol=0, atol=1e-6, msg=case)
