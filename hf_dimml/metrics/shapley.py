"""Each modality's contribution to accuracy: its Shapley value over the modality subsets.

The value of a subset S of modalities is the accuracy of the model fed S alone (the others missing), and the value
of the empty set is chance, 1 / num_classes. Modality m's Shapley value is its marginal gain averaged over every order
in which the modalities could be added:

    phi_m = sum over S not holding m of |S|! (M - |S| - 1)! / M! * (v(S + m) - v(S))

The values sum to v(all) - chance (efficiency). A large gap between two modalities' values is how this field reports
imbalance: the model relies on one modality and barely on the other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

__all__ = ["modality_shapley_values"]


def modality_shapley_values(
    subset_accuracy: Mapping[str, float], modality_names: Sequence[str], num_classes: int
) -> dict[str, float]:
    """Shapley value of each modality on accuracy.

    Args:
        subset_accuracy: accuracy of every non-empty subset, keyed by its modality names joined with `+` in
            `modality_names` order (e.g. `"audio"`, `"image"`, `"audio+image"`), as the trainer reports it.
        modality_names: the modalities, in config order.
        num_classes: the number of classes; the empty subset's value is 1 / num_classes.

    Raises:
        ValueError: a subset's accuracy is missing, or there are fewer than 2 classes.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    names = list(modality_names)
    count = len(names)

    def value(subset: tuple[str, ...]) -> float:
        if not subset:
            return 1.0 / num_classes
        key = "+".join(name for name in names if name in subset)
        if key not in subset_accuracy or subset_accuracy[key] is None:
            raise ValueError(f"the accuracy of modality subset {key!r} is missing; given: {sorted(subset_accuracy)}")
        return float(subset_accuracy[key])

    values = {}
    for name in names:
        others = [other for other in names if other != name]
        total = 0.0
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                total += weight * (value((*subset, name)) - value(subset))
        values[name] = total
    return values
