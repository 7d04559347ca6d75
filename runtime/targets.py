"""What to explain: one validated, immutable value shared by every front end (CLI, API, service,
batch job, evaluate). The defaults live here, and method names are checked here only.

    from .targets import Targets, TargetsError, parse_methods
    targets = Targets()                                   # top_k=3, maps for the top class, gradcam
    targets = Targets(top_k=5, explain_top=2, methods=parse_methods("gradcam,scorecam"))
    targets = Targets(classes=(207, 281))                 # maps for these classes of every image
    targets.check(explainer.card)                         # against the model: TargetsError if out of range
    outcomes = explainer.explain_targets(images, targets) # per image, one Outcome per method

Every problem raises TargetsError (a UsageError): one line naming the value, and `.field`
("top_k", "explain_top", "class", "method", or None when two fields conflict) for front ends
that map it to their own codes (HTTP 422 bad_top_k, ...).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError
from .methods import METHODS

DEFAULT_TOP_K = 3  # predictions reported per image
DEFAULT_EXPLAIN_TOP = 1  # maps for the most probable class: the CAM libraries' and Keras recipe's default
DEFAULT_METHOD = "gradcam"
ALL_METHODS = "all"  # parse_methods("all"): every method


class TargetsError(UsageError):
    """A bad "what to explain" value; `field` names the part that was wrong."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Targets:
    """top_k predictions per image; maps for the explain_top most probable classes, or for the
    given classes of every image (give one of the two); one set of maps per method, in order.
    Validated on construction (TargetsError); the class range needs the model: `check(card)`."""

    top_k: int = DEFAULT_TOP_K
    explain_top: int | None = None  # None: DEFAULT_EXPLAIN_TOP, unless classes are given
    classes: tuple[int, ...] | None = None
    methods: tuple[str, ...] = (DEFAULT_METHOD,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_k", check_count("top_k", self.top_k))
        if self.explain_top is not None:
            object.__setattr__(self, "explain_top", check_count("explain_top", self.explain_top))
            if self.classes is not None:
                raise TargetsError(None, "explain_top and class: give one of them")
        if self.classes is not None:
            object.__setattr__(self, "classes", _class_indices(self.classes))
        object.__setattr__(self, "methods", check_methods(self.methods))

    @property
    def maps_per_method(self) -> int:
        """How many classes each image's maps are for."""
        if self.classes is not None:
            return len(self.classes)
        return self.explain_top if self.explain_top is not None else DEFAULT_EXPLAIN_TOP

    def check(self, card: Any) -> "Targets":
        """These targets against a model (its ModelCard, or its number of classes): top_k,
        explain_top and every class within its classes, or TargetsError. Returns self."""
        classes = card if isinstance(card, int) else card.num_classes
        if self.top_k > classes:
            raise TargetsError("top_k", f"top_k {self.top_k}: must be between 1 and the model's {classes} classes")
        if self.classes is None and self.maps_per_method > classes:
            raise TargetsError(
                "explain_top", f"explain_top {self.maps_per_method}: must be between 1 and the model's {classes} classes"
            )
        for index in self.classes or ():
            if index >= classes:
                raise TargetsError(
                    "class", f"class index {index}: out of range (the model has {classes} classes, 0..{classes - 1})"
                )
        return self

    def class_index_row(self) -> np.ndarray:
        """The model's class_index input for one image (int64 [K]): -1 = the k-th most probable class."""
        if self.classes is None:
            return np.full(self.maps_per_method, -1, dtype=np.int64)
        return np.array(self.classes, dtype=np.int64)


def check_count(name: str, value: object) -> int:
    """A whole number of at least 1 (bool, float and None are refused); returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TargetsError(name, f"{name} {value!r}: not an integer (give a whole number of at least 1)")
    if value < 1:
        raise TargetsError(name, f"{name} {value}: must be at least 1")
    return int(value)


def check_method(method: object) -> str:
    """A known CAM method name (one of METHODS), or TargetsError."""
    if not isinstance(method, str) or method not in METHODS:
        raise TargetsError("method", f"method {method!r}: unknown (use {', '.join(METHODS)})")
    return method


def check_methods(methods: object) -> tuple[str, ...]:
    """A non-empty tuple of known method names, none twice."""
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)):
        raise TargetsError("method", f"methods {methods!r}: not a list of method names")
    if not methods:
        raise TargetsError("method", "methods: an empty list; give at least one method")
    chosen = tuple(check_method(method) for method in methods)
    if len(set(chosen)) != len(chosen):
        raise TargetsError("method", f"methods {', '.join(chosen)}: a method given twice")
    return chosen


def parse_methods(text: str) -> tuple[str, ...]:
    """'gradcam, scorecam' -> ('gradcam', 'scorecam'); 'all' -> every method. Each a known
    method, none twice."""
    if text.strip() == ALL_METHODS:
        return tuple(METHODS)
    names = tuple(name.strip() for name in text.split(","))
    if len(set(names)) != len(names):
        raise TargetsError("method", f"a method given twice in {text!r}")
    return check_methods(names)


def _class_indices(classes: object) -> tuple[int, ...]:
    """A non-empty list of class indices (0 or more; the upper bound is the model's: check)."""
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        classes = (classes,)
    if not isinstance(classes, (list, tuple, np.ndarray)):
        raise TargetsError("class", f"class index {classes!r}: not an integer or a list of integers")
    if len(classes) == 0:
        raise TargetsError("class", "class index: an empty list; give at least one class")
    for index in classes:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TargetsError("class", f"class index {index!r}: not an integer")
        if index < 0:
            raise TargetsError("class", f"class index {index}: out of range (class indices start at 0)")
    return tuple(int(index) for index in classes)
