"""The `multimodal-classification` pipeline on models in memory and saved ones: every method's predictions equal the
model's argmax, the head weights say which modality the prediction relied on, and bad inputs are named errors. (The
Hub round trip without hf_dimml installed is in test_hub_end_to_end.py.)"""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch
from transformers import pipeline

from hf_dimml import DIMMLForMultimodalClassification, DIMMLProcessor, MultimodalClassificationPipeline
from hf_dimml import modeling_dimml, pipeline_dimml

from test_trainer import vector_config

PROCESSOR = [{"name": "a", "kind": "vector", "dim": 6}, {"name": "b", "kind": "vector", "dim": 5}]
# Each method's heads as the pipeline names them, for a sample with both modalities and with `a` alone.
HEADS = {
    "dimml": (["a", "b", "fusion"], ["a"]),
    "mla": (["a", "b"], ["a"]),
    "unimodal": (["a", "b"], ["a"]),
    "joint": (["fusion"], ["fusion"]),
    "dmrnet": (["fusion"], ["fusion"]),
    "mmpareto": (["fusion"], ["a"]),
}
LAYOUTS = {"mmpareto": "fused_with_private"}


def make_pipeline(method: str):
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config(method=method, head_layout=LAYOUTS.get(method))).eval()
    if method == "dimml":
        model.fusion_head_trained.fill_(True)  # as after stage 2: the fusion head takes part in the weighting
    return pipeline("multimodal-classification", model=model, feature_extractor=DIMMLProcessor(PROCESSOR),
                    device=-1)


def samples(count: int = 5, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"a": rng.normal(size=6).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
            for _ in range(count)]


@pytest.mark.parametrize("method", list(HEADS))
def test_pipeline_predicts_the_model_argmax_with_head_weights(method):
    classifier = make_pipeline(method)
    assert isinstance(classifier, MultimodalClassificationPipeline)
    inputs = samples()
    with torch.no_grad():
        logits = classifier.model(a=torch.tensor(np.stack([s["a"] for s in inputs])),
                                  b=torch.tensor(np.stack([s["b"] for s in inputs]))).logits
        logits_a = classifier.model(a=torch.tensor(np.stack([s["a"] for s in inputs]))).logits
    expected = [classifier.model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    batched = classifier(inputs, batch_size=2)
    single = [classifier(sample, top_k=2) for sample in inputs]
    assert [out["predictions"][0]["label"] for out in batched] == expected
    assert [out["predictions"][0]["label"] for out in single] == expected
    probabilities = logits.softmax(-1)
    for index, out in enumerate(single):
        assert len(out["predictions"]) == 2
        assert out["predictions"][0]["score"] == pytest.approx(float(probabilities[index].max()), abs=1e-6)
        assert list(out["head_weights"]) == HEADS[method][0]
        assert sum(out["head_weights"].values()) == pytest.approx(1.0, abs=1e-6)
    alone = classifier([{"a": s["a"]} for s in inputs])
    assert [out["predictions"][0]["label"] for out in alone] == [
        classifier.model.config.id2label[i] for i in logits_a.argmax(-1).tolist()]
    assert all(list(out["head_weights"]) == HEADS[method][1] and out["modalities"] == ["a"] for out in alone)


def test_dimml_head_weights_are_the_model_certainty_weights():
    classifier = make_pipeline("dimml")
    sample = samples(1)[0]
    with torch.no_grad():
        weights = classifier.model(a=torch.tensor(sample["a"])[None], b=torch.tensor(sample["b"])[None]).head_weights
    out = classifier(sample)
    assert list(out["head_weights"].values()) == pytest.approx(weights[0].tolist(), abs=1e-6)


def test_bad_inputs_are_named_errors():
    classifier = make_pipeline("dimml")
    with pytest.raises(ValueError, match=r"unknown modality name\(s\) \['c'\]"):
        classifier({"a": samples(1)[0]["a"], "c": [1.0]})
    with pytest.raises(ValueError, match="at least one of"):
        classifier({})
    with pytest.raises(ValueError, match="dict of raw inputs"):
        classifier([samples(1)[0]["a"]])
    with pytest.raises(ValueError, match="'b'"):  # the processor names the modality whose input is wrong
        classifier({"a": samples(1)[0]["a"], "b": [1.0, float("nan"), 0.0, 0.0, 0.0]})


def test_saved_checkpoint_ships_the_pipeline_and_names_it(tmp_path):
    model = DIMMLForMultimodalClassification(vector_config())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    entry = config["custom_pipelines"][modeling_dimml.PIPELINE_TASK]
    assert entry["impl"] == modeling_dimml.PIPELINE_CLASS == "pipeline_dimml.MultimodalClassificationPipeline"
    assert modeling_dimml.PIPELINE_TASK == pipeline_dimml.PIPELINE_TASK
    assert (tmp_path / modeling_dimml.PIPELINE_FILE).read_bytes() == open(pipeline_dimml.__file__, "rb").read()
    assert not list(tmp_path.glob(".*.tmp"))
    # The shipped file is self-contained: no import of hf_dimml, no relative import.
    tree = ast.parse((tmp_path / modeling_dimml.PIPELINE_FILE).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert imported and not [name for name in imported if name.split(".")[0] == "hf_dimml"]
