"""The training methods, one class each, in one registry: `get_method(name)` is the only lookup by name.

Adding a method: a module here with its `TrainingMethod` subclass (and its arguments dataclass, whose fields become
`DIMMLTrainingArguments` fields), and its entry in `_REGISTERED` below.
"""

from __future__ import annotations

from .base import METHOD_STATE_FILE, TrainingMethod
from .baselines import Joint, Unimodal
from .dimml import DIMML
from .dmrnet import DMRNet
from .mla import MLA
from .mmpareto import MMPareto
from .ogm import OGM, OGMGE
from .pmr import PMR

__all__ = ["METHODS", "METHOD_STATE_FILE", "TrainingMethod", "get_method", "method_argument_classes"]

_REGISTERED: tuple[type[TrainingMethod], ...] = (DIMML, MLA, DMRNet, OGM, OGMGE, PMR, MMPareto, Joint, Unimodal)

#: Method name -> class, in the order the docs and benchmarks list them.
METHODS: dict[str, type[TrainingMethod]] = {method.name: method for method in _REGISTERED}


def get_method(name: str) -> type[TrainingMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; available: {sorted(METHODS)}") from None


def method_argument_classes() -> tuple[type, ...]:
    """The methods' argument dataclasses, mixed into `DIMMLTrainingArguments`."""
    # Once each: methods may share one (ogm and ogm_ge).
    return tuple(dict.fromkeys(method.arguments for method in _REGISTERED if method.arguments is not None))
