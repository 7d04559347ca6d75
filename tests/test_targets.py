"""runtime.targets: the one validated "what to explain" value, and its checks against a model."""

import dataclasses
import re

import numpy as np
import pytest

from runtime import UsageError
from runtime.methods import METHODS
from runtime.targets import DEFAULT_TOP_K, Targets, TargetsError, parse_methods


def test_the_defaults_are_three_predictions_and_the_top_class_by_gradcam():
    targets = Targets()
    assert (targets.top_k, targets.maps_per_method, targets.classes, targets.methods) == (3, 1, None, ("gradcam",))
    assert DEFAULT_TOP_K == 3
    assert targets.class_index_row().tolist() == [-1] and targets.class_index_row().dtype == np.int64


def test_explain_top_and_classes_make_the_models_class_index_row():
    assert Targets(explain_top=2).class_index_row().tolist() == [-1, -1]
    given = Targets(classes=[np.int64(7), 2])
    assert given.classes == (7, 2) and type(given.classes[0]) is int  # plain ints, a tuple
    assert given.class_index_row().tolist() == [7, 2] and given.maps_per_method == 2
    assert Targets(classes=5).classes == (5,)
    numpy_counts = Targets(top_k=np.int64(2), explain_top=np.int32(2))
    assert type(numpy_counts.top_k) is int and type(numpy_counts.explain_top) is int  # JSON-ready


def test_a_value_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Targets().top_k = 5


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"top_k": 0}, "top_k", "top_k 0: must be at least 1"),
        ({"top_k": 2.0}, "top_k", "top_k 2.0: not an integer"),
        ({"top_k": None}, "top_k", "top_k None: not an integer"),
        ({"top_k": True}, "top_k", "top_k True: not an integer"),
        ({"explain_top": -1}, "explain_top", "explain_top -1: must be at least 1"),
        ({"classes": []}, "class", "class index: an empty list; give at least one class"),
        ({"classes": [1, -1]}, "class", "class index -1: out of range"),
        ({"classes": [1.5]}, "class", "class index 1.5: not an integer"),
        ({"classes": "2"}, "class", "class index '2': not an integer"),
        ({"classes": True}, "class", "class index True: not an integer"),
        ({"classes": (1,), "explain_top": 2}, None, "explain_top and class: give one of them"),
        ({"methods": ("magic",)}, "method", "method 'magic': unknown (use gradcam,"),
        ({"methods": ()}, "method", "methods: an empty list"),
        ({"methods": "gradcam"}, "method", "methods 'gradcam': not a list"),
        ({"methods": ("gradcam", "gradcam")}, "method", "a method given twice"),
    ],
)
def test_each_bad_field_is_one_line_naming_it(fields, field, message):
    with pytest.raises(TargetsError, match=re.escape(message)) as raised:
        Targets(**fields)
    assert raised.value.field == field and isinstance(raised.value, UsageError)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"top_k": 5}, "top_k", "top_k 5: must be between 1 and the model's 4 classes"),
        ({"explain_top": 5}, "explain_top", "explain_top 5: must be between 1 and the model's 4 classes"),
        ({"classes": (0, 4)}, "class", "class index 4: out of range (the model has 4 classes, 0..3)"),
    ],
)
def test_the_model_bounds_top_k_explain_top_and_classes(fields, field, message):
    with pytest.raises(TargetsError, match=re.escape(message)) as raised:
        Targets(**fields).check(4)
    assert raised.value.field == field


def test_check_takes_a_card_and_returns_the_targets():
    class Card:
        num_classes = 4

    targets = Targets(top_k=4, classes=(3, 0))
    assert targets.check(Card()) is targets and targets.check(4) is targets


def test_parse_methods():
    assert parse_methods("gradcam, scorecam") == ("gradcam", "scorecam")
    assert parse_methods("all") == tuple(METHODS)
    with pytest.raises(TargetsError, match="a method given twice in 'eigencam,eigencam'"):
        parse_methods("eigencam,eigencam")
    with pytest.raises(TargetsError, match="method 'magic': unknown"):
        parse_methods("gradcam,magic")
    with pytest.raises(TargetsError, match="method '': unknown"):
        parse_methods("")
