"""`multimodal-classification` pipeline: raw inputs per modality in, labels and the weight of each head out.

Self-contained on purpose (no import of hf_dimml): `save_pretrained` copies this file next to every checkpoint and
records it in the config's `custom_pipelines`, so that

    from transformers import pipeline

    classifier = pipeline("multimodal-classification", model="user/dimml-av-digits", trust_remote_code=True)
    classifier({"audio": "clip.wav", "image": "digit.png"})            # one sample, any subset of the modalities
    classifier([{"audio": mfcc}, {"audio": mfcc2, "image": image}])    # several, batched by modality subset

works where hf_dimml is not installed. The checkpoint's processor (loaded as its feature extractor) turns each raw
input (file path, array, PIL image, ...) into the model's tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import Pipeline

__all__ = ["PIPELINE_TASK", "MultimodalClassificationPipeline"]

PIPELINE_TASK = "multimodal-classification"


class MultimodalClassificationPipeline(Pipeline):
    """
    Classifies one sample (a dict of raw inputs keyed by modality name, any non-empty subset of the model's
    modalities) or a list of them.

    Each result is a dict:

    - `predictions`: the `top_k` labels (default 5, at most the number of classes) with their scores (softmax of the
      model's final logits), best first;
    - `head_weights`: the weight each head received in the final prediction, keyed by modality name (its own head)
      and `fusion` (the head over all modalities): DI-MML's certainty weights, MLA's entropy weights, the unimodal
      ensemble's equal weights; `{"fusion": 1.0}` for methods with a single fused head (joint, DMRNet, ...). This says
      which modality the prediction relied on;
    - `modalities`: the modalities the sample had.

    Keyword arguments: `top_k`, `sampling_rate` (of bare audio arrays), `batch_size` (for a list: samples with the
    same modalities are processed and run together, this many at a time).
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True  # the hf_dimml processor (a FeatureExtractionMixin) of the checkpoint
    _load_tokenizer = False

    def _sanitize_parameters(self, top_k: int | None = None, sampling_rate: int | None = None, **kwargs: Any):
        preprocess_params = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        postprocess_params = {} if top_k is None else {"top_k": top_k}
        return preprocess_params, {}, postprocess_params

    # --- checks ------------------------------------------------------------------------------------------------

    @property
    def modality_names(self) -> list[str]:
        return [spec["name"] for spec in self.model.config.modalities]

    def _present(self, sample: Any) -> tuple[str, ...]:
        """The sample's modalities in config order; a clear error for anything but a dict of known names."""
        if not isinstance(sample, Mapping):
            raise ValueError(
                f"{PIPELINE_TASK}: each input is a dict of raw inputs keyed by modality name (some of "
                f"{self.modality_names}), got {type(sample).__name__}"
            )
        unknown = sorted(set(sample) - set(self.modality_names))
        if unknown:
            raise ValueError(f"{PIPELINE_TASK}: unknown modality name(s) {unknown}; this model has {self.modality_names}")
        present = tuple(name for name in self.modality_names if sample.get(name) is not None)
        if not present:
            raise ValueError(f"{PIPELINE_TASK}: a sample needs at least one of {self.modality_names}")
        return present

    # --- the pipeline steps --------------------------------------------------------------------------------------

    def __call__(self, inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]], **kwargs: Any):
        if isinstance(inputs, Mapping):
            return super().__call__(inputs, **kwargs)
        samples = list(inputs)
        batch_size = kwargs.pop("batch_size", None) or getattr(self, "_batch_size", None) or 8
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        # Samples with the same modalities run together; the results come back in input order.
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, sample in enumerate(samples):
            groups.setdefault(self._present(sample), []).append(index)
        results: list[Any] = [None] * len(samples)
        for present, indexes in groups.items():
            for start in range(0, len(indexes), batch_size):
                chunk = indexes[start:start + batch_size]
                model_inputs = self._process([samples[index] for index in chunk], present, **preprocess_params)
                outputs = self.forward(model_inputs, **forward_params)
                for row, index in enumerate(chunk):
                    results[index] = self.postprocess(_row(outputs, row), **postprocess_params)
        return results

    def _process(self, samples: list[Mapping[str, Any]], present: tuple[str, ...], sampling_rate: int | None = None):
        model_inputs = dict(self.feature_extractor(
            is_batched=True, sampling_rate=sampling_rate, return_tensors="pt",
            **{name: [sample[name] for sample in samples] for name in present},
        ))
        model_inputs["present"] = present
        return model_inputs

    def preprocess(self, inputs: Mapping[str, Any], sampling_rate: int | None = None) -> dict[str, Any]:
        return self._process([inputs], self._present(inputs), sampling_rate)

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        present = model_inputs.pop("present")
        outputs = self.model(**model_inputs)
        return {"logits": outputs.logits, "head_weights": outputs.head_weights, "present": present}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 5) -> dict[str, Any]:
        logits = model_outputs["logits"][0].float()
        present = list(model_outputs["present"])
        scores = logits.softmax(dim=-1)
        top_k = max(1, min(int(top_k), scores.shape[-1]))
        values, indexes = scores.topk(top_k)
        id2label = self.model.config.id2label
        predictions = [{"label": id2label[int(index)], "score": float(value)} for value, index in zip(values, indexes)]
        return {"predictions": predictions, "head_weights": self._head_weights(model_outputs, present),
                "modalities": present}

    def _head_weights(self, model_outputs: dict[str, Any], present: list[str]) -> dict[str, float]:
        # Checkpoints of hf_dimml 0.1 name only their method, whose layout was the same name's.
        layout = getattr(self.model.config, "head_layout", None) or self.model.config.method
        weights = model_outputs["head_weights"]
        if weights is not None:
            # DI-MML: the present modalities' private heads, then the fusion head when all are present; MLA: the
            # present modalities.
            names = present + (["fusion"] if weights.shape[-1] > len(present) else [])
            return {name: float(weight) for name, weight in zip(names, weights[0].float())}
        if layout in ("unimodal_ensemble", "unimodal"):  # the ensemble averages the present modalities' heads
            return dict.fromkeys(present, 1.0 / len(present))
        if layout == "fused_with_private" and len(present) == 1:  # a modality alone: its own head
            return {present[0]: 1.0}
        return {"fusion": 1.0}  # one fused head (joint, OGM-GE, PMR, MMPareto, DMRNet)


def _row(outputs: dict[str, Any], row: int) -> dict[str, Any]:
    """One sample of a batched forward, shaped as `postprocess` takes it (a batch of one)."""
    return {key: value[row:row + 1] if isinstance(value, torch.Tensor) else value for key, value in outputs.items()}
