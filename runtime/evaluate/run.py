"""One evaluation: explain each image, score its perturbed copies through the same .onnx, and
collect every metric per method and image (streamed: one image's perturbed batch at a time)."""

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import contract
from ..errors import ImageError
from ..explainer import Explainer
from ..images import decode_image, describe, resize_for_model
from ..session import open_session
from . import baselines, metrics, road, sanity
from .boxes import BoxLookup

# what --metrics names, in report order; road gives road, road-morf and road-lerf
METRICS = ("deletion", "insertion", "road", "average-drop", "increase-in-confidence", "drop-in-confidence",
           "confidence-change", "pointing-game", "insertion-torchcam", "deletion-blur")
DEFAULT_METRICS = tuple(m for m in METRICS if m not in ("insertion-torchcam", "deletion-blur"))
CONFIDENCE = ("average-drop", "increase-in-confidence", "drop-in-confidence", "confidence-change")
ROAD_VALUES = ("road", "road-morf", "road-lerf")
CURVES = {
    "deletion": metrics.deletion_curve,
    "insertion": metrics.insertion_curve,
    "insertion-torchcam": metrics.torchcam_insertion_curve,
    "deletion-blur": metrics.blur_deletion_curve,
}
BASELINES = baselines.BASELINES
MODEL_FREE = ("layer-noise", "pixel-noise", "gaussian", "edge")  # the same map whatever the model
EXAMPLES = 4  # images drawn in examples.png
# the raw colour each preprocessing maps to 0, and its scale (export's PREPROCESSING tables)
NORMALISATIONS = {
    "torch": metrics.Normalisation((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": metrics.Normalisation((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": metrics.Normalisation((123.68, 116.779, 103.939), (1.0, 1.0, 1.0)),
    "none": metrics.Normalisation(),
}


def normalisation_of(preprocessing: str) -> metrics.Normalisation | None:
    """The model card's preprocessing (a name, or "mean [r, g, b] std [r, g, b]") as a
    Normalisation; None when it cannot be read."""
    if preprocessing in NORMALISATIONS:
        return NORMALISATIONS[preprocessing]
    number = r"\s*(-?[\d.eE+-]+)\s*"
    found = re.fullmatch(rf"mean \[{number},{number},{number}\] std \[{number},{number},{number}\]", preprocessing)
    if not found:
        return None
    values = [float(v) for v in found.groups()]
    return metrics.Normalisation(tuple(values[:3]), tuple(values[3:]))


def passes_per_map(chosen: Sequence[str], pixels: int, steps: int) -> int:
    """Forward passes one map costs (one image, one class) for the chosen metrics."""
    curve_points = len(metrics.step_counts(pixels, steps))
    return (sum(curve_points for name in CURVES if name in chosen)
            + (2 if any(name in chosen for name in CONFIDENCE) else 0)
            + (2 * len(road.PERCENTILES) + 1 if "road" in chosen else 0))


class ModelRuns:
    """The .onnx on its own session: the class probabilities of any images (fetching only the
    probabilities), and the target layers' feature maps (for the random-CAM baseline)."""

    def __init__(self, model_path: str, layers: int, device: str = "cpu") -> None:
        self.session = open_session(model_path, device)
        self.layers = layers

    def _feeds(self, images: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        return {contract.INPUT_IMAGE: np.ascontiguousarray(images, dtype=np.float32),
                contract.INPUT_CLASS_INDEX: np.asarray(classes, dtype=np.int64).reshape(-1, 1)}

    def score(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int64)
        (probabilities,) = self.session.run([contract.OUTPUT_PROBABILITIES], self._feeds(images, classes))
        return probabilities[np.arange(len(images)), classes]

    def feature_maps(self, images: np.ndarray) -> list[np.ndarray]:
        """One [N, h, w, C] per target layer."""
        names = [contract.layer_output(contract.OUTPUT_FEATURE_MAPS, i) for i in range(self.layers)]
        return self.session.run(names, self._feeds(images, np.full(len(images), -1)))


def device_of(explainer: Explainer) -> str:
    """The device the explainer's session runs on, for the metrics' own session."""
    return "cuda" if explainer.provider.startswith("CUDA") else "cpu"


def model_score(model_path: str, device: str = "cpu") -> metrics.Score:
    """score(images, classes) -> each image's class probability through the .onnx."""
    return ModelRuns(model_path, 0, device).score


@dataclass
class Results:
    """Per method (or baseline): per metric, one value per image and class; summed curves."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    correlations: dict[str, list[float]] = field(default_factory=dict)
    images: int = 0
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unboxed: list[str] = field(default_factory=list)
    examples: list[tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=list)

    def add(self, name: str, metric: str, value: float) -> None:
        self.values.setdefault(name, {}).setdefault(metric, []).append(float(value))

    def add_curve(self, name: str, metric: str, values: np.ndarray) -> None:
        totals = self.curves.setdefault(name, {})
        totals[metric] = totals.get(metric, 0) + values


@dataclass(frozen=True)
class Settings:
    """How each map is measured."""

    chosen: Sequence[str] = DEFAULT_METRICS
    steps: int = 50
    batch_size: int = 32
    normalisation: metrics.Normalisation = metrics.Normalisation()


def evaluate_map(
    score: metrics.Score, image: np.ndarray, saliency: np.ndarray, class_index: int,
    settings: Settings, boxes: np.ndarray | None, rng: np.random.Generator | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every chosen metric of one map: its values and its deletion / insertion curves. rng: ROAD's
    imputation noise (pytorch-grad-cam's N(0, 0.01) on the normalised input); None: none."""
    chosen, values, curves = settings.chosen, {}, {}
    for name, make_curve in CURVES.items():
        if name in chosen:
            curves[name] = make_curve(score, image, saliency, class_index, settings.steps, settings.batch_size,
                                      settings.normalisation)
            values[name] = metrics.auc(curves[name])
    if any(name in chosen for name in CONFIDENCE):
        changes = metrics.confidence_change(score, image[None], saliency[None], np.array([class_index]),
                                            settings.normalisation)
        values |= {name: float(change[0]) for name, change in changes.items() if name in chosen}
    if "road" in chosen:
        values |= road.road_scores(score, image, saliency, class_index, settings.batch_size, settings.normalisation,
                                   rng)
    if "pointing-game" in chosen and boxes is not None and len(boxes):
        values["pointing-game"] = metrics.pointing_hit(saliency, boxes)
    return values, curves


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
    chosen: Sequence[str] = DEFAULT_METRICS,
    top_k: int = 1,
    class_index: Sequence[int] | None = None,
    steps: int = 50,
    seed: int = 0,
    boxes: dict | None = None,
    random_explainer: Explainer | None = None,
    on_error: Callable[[ImageError], None] = lambda error: None,
    on_image: Callable[[], None] = lambda: None,
    score: metrics.Score | None = None,
    normalisation: metrics.Normalisation | None = None,
) -> Results:
    """Every metric of every method and baseline over the images, in batches of the explainer's
    batch_size. boxes: {source: {class index: [[x0, y0, x1, y1], ...]}} in original pixels,
    checked (boxes.read), matched by path, then by file name where unique. normalisation: the
    model's, read from its card when None."""
    runs = ModelRuns(explainer.model_path, len(explainer.card.layers), device_of(explainer))
    score = score or runs.score
    if normalisation is None:
        normalisation = normalisation_of(explainer.card.preprocessing) or metrics.Normalisation()
    settings = Settings(chosen, steps, explainer.batch_size, normalisation)
    lookup = BoxLookup(boxes) if boxes is not None else None
    results = Results()
    decoded = decoded_images(sources, explainer.card.input_size, explainer.max_pixels,
                             lambda error: (results.skipped.append(str(error)), on_error(error)))
    while chunk := list(itertools.islice(decoded, explainer.batch_size)):
        arrays = [image for _, _, image in chunk]
        outcomes = list(explainer.explain_methods(arrays, methods, top_k, class_index, explain_top=top_k))
        layers = runs.feature_maps(np.stack(arrays).astype(np.float32))
        for n, ((source, original, image), per_method) in enumerate(zip(chunk, outcomes, strict=True)):
            index = results.images
            results.images += 1
            results.names.append(source)
            per_class = lookup.find(source) if lookup else None
            if lookup and per_class is None:
                results.unboxed.append(source)
            for k, class_map in enumerate(per_method[0].explanation.maps):
                target = class_map.class_index
                image_boxes = _scaled(per_class, target, original, image.shape[:2])
                maps = {m: outcome.explanation.maps[k].heatmap for m, outcome in zip(methods, per_method)}
                maps |= baselines.baseline_maps(image, [layer[n] for layer in layers], seed, index * 1000 + k)
                if len(results.examples) < EXAMPLES:
                    results.examples.append((image, maps))
                rng = np.random.default_rng([seed, index, k, 1])
                for name, saliency in maps.items():
                    values, curves = evaluate_map(score, image, saliency, target, settings, image_boxes, rng)
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
    """Each method's (and model-free baseline's) map on the random model against the trained
    model's."""
    random_maps = {
        m: outcome.explanation.maps[0].heatmap
        for m, outcome in zip(methods, next(random_explainer.explain_methods([image], methods, 1, [target])))
    }
    random_maps |= {b: maps[b] for b in MODEL_FREE}
    for name, random_map in random_maps.items():
        results.correlations.setdefault(name, []).append(sanity.spearman(maps[name], random_map))


def _scaled(
    per_class: dict | None, class_index: int, original: tuple[int, int], size: tuple[int, int]
) -> np.ndarray | None:
    """The boxes of one class, scaled from original pixels to the model's input."""
    per_class = per_class or {}
    found = per_class.get(str(class_index), per_class.get(class_index))  # JSON's string keys, or ints
    if not found:
        return None
    scale = np.array([size[1] / original[1], size[0] / original[0]] * 2)
    return np.asarray(found, dtype=np.float64).reshape(-1, 4) * scale
