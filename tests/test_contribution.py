"""Each modality's Shapley value on accuracy: hand computations, the Shapley axioms, and the card."""

from __future__ import annotations

import itertools
import random

import pytest

from hf_dimml.metrics import modality_shapley_values
from hf_dimml.model_card import build_model_card
from hf_dimml.trainer import modality_subsets


def test_two_modalities_by_hand():
    values = modality_shapley_values({"audio": 0.88, "image": 0.64, "audio+image": 0.96}, ["audio", "image"], 10)
    # audio: half of (0.88 - 0.10) alone plus half of (0.96 - 0.64) on top of image
    assert values["audio"] == pytest.approx((0.78 + 0.32) / 2)
    assert values["image"] == pytest.approx((0.54 + 0.08) / 2)


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]])
def test_efficiency_symmetry_and_null_player(names):
    generator = random.Random(len(names))
    accuracy = {"+".join(subset): generator.random() for subset in modality_subsets(names)}
    values = modality_shapley_values(accuracy, names, 4)
    assert sum(values.values()) == pytest.approx(accuracy["+".join(names)] - 0.25)  # efficiency
    # A modality that never changes the accuracy gets 0; two interchangeable ones get the same value.
    null = names[-1]
    base = {"+".join(s): (0.25 if s == (null,) else 0.5 + 0.1 * len([m for m in s if m != null]))
            for s in modality_subsets(names)}
    values = modality_shapley_values(base, names, 4)
    assert values[null] == pytest.approx(0.0, abs=1e-12)
    assert len({round(values[name], 12) for name in names[:-1]}) == 1


def test_order_of_the_permutation_average():
    # Against the definition: the marginal gain averaged over all orders of adding the modalities.
    names = ["a", "b", "c"]
    accuracy = {"a": 0.5, "b": 0.4, "c": 0.2, "a+b": 0.7, "a+c": 0.55, "b+c": 0.45, "a+b+c": 0.8}

    def value(members):
        key = "+".join(name for name in names if name in members)
        return accuracy[key] if key else 0.5

    expected = dict.fromkeys(names, 0.0)
    orders = list(itertools.permutations(names))
    for order in orders:
        for position, name in enumerate(order):
            expected[name] += (value(order[: position + 1]) - value(order[:position])) / len(orders)
    assert modality_shapley_values(accuracy, names, 2) == pytest.approx(expected)


def test_missing_subset_and_bad_class_count_are_errors():
    with pytest.raises(ValueError, match="'audio\\+image' is missing"):
        modality_shapley_values({"audio": 0.8, "image": 0.6}, ["audio", "image"], 10)
    with pytest.raises(ValueError, match="num_classes"):
        modality_shapley_values({"a": 1.0, "b": 1.0, "a+b": 1.0}, ["a", "b"], 1)


def test_card_reports_the_contribution():
    summary = {"method": "dimml", "modalities": [{"name": "audio"}, {"name": "image"}],
               "metrics": {"test": {"accuracy": 0.96, "modality_shapley": {"audio": 0.55, "image": 0.31}}}}
    card = str(build_model_card(summary, contribution_plot_path="modality_contribution.png"))
    section = card.split("## Modality contribution", 1)[1]
    assert "| `audio` | +55.00 | 64 % |" in section and "| `image` | +31.00 | 36 % |" in section
    assert "![modality contribution](modality_contribution.png)" in section
    assert "modality_contribution.png" not in str(build_model_card(summary))  # no plot file: the table only
    assert "## Modality contribution" not in str(build_model_card({"method": "dimml"}))
