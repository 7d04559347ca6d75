"""One evaluation: explain each image, score its perturbed copies through the same .onnx, and
collect every metric per method and image (streamed: one image's perturbed batch at a time)."""

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import contract
from ..errors import ImageError
from ..explainer import Explainer
from ..images import decode_image, describe, resize_for_model
from ..session import open_session
from . import baselines, metrics, sanity

METRICS = ("deletion", "deletion-blur", "insertion", "average-drop", "increase-in-confidence", "pointing-game")
CURVES = {
    "deletion": metrics.deletion_curve,
    "deletion-blur": metrics.blur_deletion_curve,
    "insertion": metrics.insertion_curve,
}
BASELINES = ("random", "gaussian", "edge")
EXAMPLES = 4  # images drawn in examples.png


def model_score(model_path: str, device: str = "cpu") -> metrics.Score:
    """score(images, classes) -> each image's class probability: one run of the same .onnx per
    call on its own session (runtime.session.open_session), fetching only the probabilities.
    Stands in for a public Explainer.probabilities(images) (see the report)."""
    session = open_session(model_path, device)

    def score(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int64)
        feeds = {contract.INPUT_IMAGE: np.ascontiguousarray(images, dtype=np.float32),
                 contract.INPUT_CLASS_INDEX: classes[:, None]}
        (probabilities,) = session.run([contract.OUTPUT_PROBABILITIES], feeds)
        return probabilities[np.arange(len(images)), classes]

    return score


class Counted:
    """A score callable that counts its forward passes (images scored)."""

    def __init__(self, score: metrics.Score) -> None:
        self.score, self.passes = score, 0

    def __call__(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        self.passes += len(images)
        return self.score(images, classes)


@dataclass
class Results:
    """Per method (or baseline): per metric, one value per image and class; summed curves."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    correlations: dict[str, list[float]] = field(default_factory=dict)
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    examples: list[tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=list)

    def add(self, name: str, metric: str, value: float) -> None:
        self.values.setdefault(name, {}).setdefault(metric, []).append(float(value))

    def add_curve(self, name: str, metric: str, values: np.ndarray) -> None:
        totals = self.curves.setdefault(name, {})
        totals[metric] = totals.get(metric, 0) + values


def evaluate_map(
    score: metrics.Score, image: np.ndarray, saliency: np.ndarray, class_index: int,
    chosen: Sequence[str], steps: int, batch_size: int, boxes: np.ndarray | None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every chosen metric of one map: its values and its deletion / insertion curves."""
    values, curves = {}, {}
    for name, make_curve in CURVES.items():
        if name in chosen:
            curves[name] = make_curve(score, image, saliency, class_index, steps, batch_size)
            values[name] = metrics.auc(curves[name])
    if "average-drop" in chosen or "increase-in-confidence" in chosen:
        drop, increase = metrics.confidence_change(
            score, image[None], saliency[None], np.array([class_index])
        )
        values["average-drop"], values["increase-in-confidence"] = float(drop[0]), float(increase[0])
    if "pointing-game" in chosen and boxes is not None and len(boxes):
        values["pointing-game"] = metrics.pointing_hit(saliency, boxes)
    return {k: v for k, v in values.items() if k in chosen}, curves


def decoded_images(
    sources: Iterable, size: tuple[int, int], max_pixels: int, on_error: Callable[[ImageError], None]
) -> Iterable[tuple[str, tuple[int, int], np.ndarray]]:
    """(source, original (height, width), the image resized to the model's input as uint8) for
    each usable image; on_error gets each bad one."""
    for position, source in enumerate(sources):
        name = describe(source, position)
        try:
            image = decode_image(source, name, max_pixels)
        except ImageError as error:
            on_error(error)
            continue
        resized = np.clip(np.rint(resize_for_model(image, size)), 0, 255).astype(np.uint8)
        yield name, image.shape[:2], resized


def evaluate(
    explainer: Explainer,
    sources: Iterable,
    methods: Sequence[str],
    chosen: Sequence[str] = METRICS,
    top_k: int = 1,
    class_index: Sequence[int] | None = None,
    steps: int = 50,
    seed: int = 0,
    boxes: dict | None = None,
    random_explainer: Explainer | None = None,
    on_error: Callable[[ImageError], None] = lambda error: None,
    on_image: Callable[[], None] = lambda: None,
    score: metrics.Score | None = None,
) -> Results:
    """Every metric of every method and baseline over the images, in batches of the explainer's
    batch_size. boxes: {source: {class index: [[x0, y0, x1, y1], ...]}} in original pixels."""
    score = score or model_score(explainer.model_path)
    results = Results()
    batch = explainer.batch_size
    decoded = decoded_images(sources, explainer.card.input_size, explainer.max_pixels,
                             lambda error: (results.skipped.append(str(error)), on_error(error)))
    while chunk := list(itertools.islice(decoded, batch)):
        arrays = [image for _, _, image in chunk]
        outcomes = list(explainer.explain_methods(arrays, methods, top_k, class_index, explain_top=top_k))
        for (source, original, image), per_method in zip(chunk, outcomes, strict=True):
            index = results.images
            results.images += 1
            for k, class_map in enumerate(per_method[0].explanation.maps):
                target = class_map.class_index
                image_boxes = _boxes_for(boxes, source, target, original, image.shape[:2])
                maps = {m: outcome.explanation.maps[k].heatmap for m, outcome in zip(methods, per_method)}
                maps |= baselines.baseline_maps(image, seed, index)
                if len(results.examples) < EXAMPLES:
                    results.examples.append((image, maps))
                for name, saliency in maps.items():
                    values, curves = evaluate_map(
                        score, image, saliency, target, chosen, steps, batch, image_boxes
                    )
                    for metric, value in values.items():
                        results.add(name, metric, value)
                    for metric, values_ in curves.items():
                        results.add_curve(name, metric, values_)
                if random_explainer is not None:
                    _sanity(results, random_explainer, image, methods, target, maps)
            on_image()
    return results


def _sanity(
    results: Results, random_explainer: Explainer, image: np.ndarray, methods: Sequence[str],
    target: int, maps: dict[str, np.ndarray],
) -> None:
    """Each method's (and baseline's) map on the random model against the trained model's."""
    random_maps = {
        m: outcome.explanation.maps[0].heatmap
        for m, outcome in zip(methods, next(random_explainer.explain_methods([image], methods, 1, [target])))
    }
    random_maps |= {b: maps[b] for b in BASELINES}  # the baselines never look at the model
    for name, random_map in random_maps.items():
        results.correlations.setdefault(name, []).append(sanity.spearman(maps[name], random_map))


def _boxes_for(
    boxes: dict | None, source: str, class_index: int, original: tuple[int, int], size: tuple[int, int]
) -> np.ndarray | None:
    """The boxes of (source, class), scaled from original pixels to the model's input."""
    if boxes is None:
        return None
    per_class = boxes.get(source)
    if per_class is None:
        return None
    found = per_class.get(str(class_index), per_class.get(class_index))
    if not found:
        return None
    scale = np.array([size[1] / original[1], size[0] / original[0]] * 2)
    return np.asarray(found, dtype=np.float64).reshape(-1, 4) * scale
