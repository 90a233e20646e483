"""Tests of :class:`hf_dimml.data.collator.MultimodalDataCollator`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_dimml.data.collator import MultimodalDataCollator


def _example(label: int, audio_shape=(1, 13, 20), image_shape=(1, 8, 8), **overrides):
    example = {
        "audio": np.full(audio_shape, label, dtype=np.float64),
        "image": torch.full(image_shape, float(label), dtype=torch.float64),
        "labels": label,
        "audio_id": 100 + label,
    }
    example.update(overrides)
    return example


def test_stacks_modalities_and_labels():
    batch = MultimodalDataCollator()([_example(3), _example(7)])
    assert set(batch) == {"audio", "image", "labels"}  # the scalar audio_id is not a modality
    assert batch["audio"].shape == (2, 1, 13, 20) and batch["audio"].dtype == torch.float32
    assert batch["image"].shape == (2, 1, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [3, 7]
    assert batch["audio"][1].unique().tolist() == [7.0]


def test_accepts_nested_lists_and_numpy_labels():
    examples = [
        {"image": [[0.0, 1.0], [2.0, 3.0]], "labels": np.int64(1)},
        {"image": [[4.0, 5.0], [6.0, 7.0]], "labels": torch.tensor(0)},
    ]
    batch = MultimodalDataCollator()(examples)
    assert batch["image"].tolist() == [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]]
    assert batch["labels"].tolist() == [1, 0]


def test_explicit_modalities_select_keys():
    batch = MultimodalDataCollator(modalities=["image"])([_example(1), _example(2)])
    assert set(batch) == {"image", "labels"}


def test_modality_absent_from_all_examples_is_omitted():
    examples = [_example(1, audio=None), _example(2, audio=None)]
    batch = MultimodalDataCollator(modalities=["audio", "image"])(examples)
    assert set(batch) == {"image", "labels"}
    examples = [{k: v for k, v in _example(i).items() if k != "audio"} for i in (1, 2)]
    assert "audio" not in MultimodalDataCollator(modalities=["audio", "image"])(examples)


def test_mixed_presence_names_the_modality():
    with pytest.raises(ValueError, match=r"'audio'.*\[1\]"):
        MultimodalDataCollator()([_example(1), _example(2, audio=None), _example(3)])
    with pytest.raises(ValueError, match="'image'"):
        MultimodalDataCollator(modalities=["audio", "image"])([_example(1), {"audio": np.zeros((1, 13, 20)), "labels": 0}])


def test_shape_mismatch_names_the_modality_and_shapes():
    examples = [_example(1), _example(2, audio_shape=(1, 13, 21))]
    with pytest.raises(ValueError, match=r"'audio'.*\(1, 13, 20\).*\(1, 13, 21\)"):
        MultimodalDataCollator()(examples)


def test_labels_optional_but_not_mixed():
    examples = [{"image": np.zeros((8, 8))}, {"image": np.ones((8, 8))}]
    assert set(MultimodalDataCollator()(examples)) == {"image"}
    with pytest.raises(ValueError, match="labels"):
        MultimodalDataCollator()([{"image": np.zeros((8, 8)), "labels": 1}, {"image": np.ones((8, 8))}])


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        MultimodalDataCollator()([])
