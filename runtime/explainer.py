"""Explainer: one warm onnxruntime session; images in, predictions and class heatmaps out."""

import copy
import dataclasses
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from . import contract, render
from .errors import ImageError, ModelError, UsageError, one_line
from .images import DEFAULT_MAX_PIXELS, ImageInput, Original, decode_image, describe, read_image, resize_for_model
from .methods import DEFAULT_MAX_CHANNELS, METHODS, CamMethod, LayerInputs, Options
from .model_card import ModelCard, read_model_card
from .results import ClassMap, Explanation, Outcome, Prediction
from .session import open_session
from .targets import DEFAULT_EXPLAIN_TOP, DEFAULT_TOP_K, Targets, check_count, check_method

# aug_smooth: pytorch-grad-cam's test-time augmentation (ttach HorizontalFlip x Multiply), as
# (flip, factor on the raw 0..255 pixels, not clipped); the first is the plain run.
AUGMENTATIONS = ((False, 1.0), (False, 0.9), (False, 1.1), (True, 0.9), (True, 1.0), (True, 1.1))
PREDICTION_OUTPUTS = (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS, contract.OUTPUT_SCORE)


DEFAULT_BATCH_SIZE = 8  # images per model run

# 1 Mpx (3 MB decoded): a batch of 8 such images costs 24 MB to keep, while decoding each one again
# costs as much CPU time as its first decode.
KEEP_DECODED_PIXELS = 1_000_000


class Explainer:
    """Explains an onnxcam model's predictions. One instance may serve several threads:
    it keeps no per-call state, and onnxruntime's `run` is thread-safe.

    method: one of METHODS. With several target layers in the model, each layer's map is
    normalised and upsampled, then the layers are averaged. aug_smooth: also explain the image
    flipped horizontally and with its pixels x 0.9 / 1.1 (six runs, the same classes), flip the
    maps back and average them. eigen_smooth: the first principal component of the weighted
    activations instead of their sum. max_channels: Score-CAM re-runs the model for at most this
    many channels per image (those of highest mean activation). No model run takes more than
    batch_size images."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        method: str = "gradcam",
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        max_channels: int = DEFAULT_MAX_CHANNELS,
    ) -> None:
        check_method(method)
        check_count("batch size", batch_size)
        check_count("max pixels", max_pixels)
        check_count("max channels", max_channels)
        self.model_path = os.fspath(model_path)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.aug_smooth = aug_smooth
        self._options = Options(eigen_smooth=eigen_smooth, max_channels=max_channels)
        self._session = open_session(self.model_path, device)
        self.provider: str = self._session.get_providers()[0]
        self.card: ModelCard = read_model_card(self.model_path, self._session)
        self._use_method(method)

    def with_method(self, method: str) -> "Explainer":
        """The same model, session and settings, with another CAM method."""
        check_method(method)
        other = copy.copy(self)
        other._use_method(method)
        return other

    def with_options(self, aug_smooth: bool, eigen_smooth: bool) -> "Explainer":
        """The same model, session and method, with these smoothing settings."""
        other = copy.copy(self)
        other.aug_smooth = aug_smooth
        other._options = dataclasses.replace(self._options, eigen_smooth=eigen_smooth)
        other._use_method(self.method.name)
        return other

    @property
    def eigen_smooth(self) -> bool:
        return self._options.eigen_smooth

    def _use_method(self, method: str) -> None:
        self.method: CamMethod = METHODS[method](self._options)

    def _output_names(self, methods: Sequence[CamMethod]) -> list[str]:
        """What one run fetches for `methods`: the predictions and each layer's method outputs."""
        layer_outputs = [
            contract.layer_output(name, i)
            for method in methods
            for i in range(len(self.card.layers))
            for name in method.layer_outputs
        ]
        always = [contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS]
        return list(dict.fromkeys(always + layer_outputs))

    def explain(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = DEFAULT_TOP_K,
        class_index: int | Sequence[int] | None = None,
        explain_top: int = DEFAULT_EXPLAIN_TOP,
    ) -> Explanation | list[Explanation]:
        """One image (path, bytes or HxWx3 uint8 RGB array) -> an Explanation; a list or tuple
        -> a list of them. top_k predictions; maps for the explain_top most probable classes
        (the CAM libraries' and the Keras recipe's default: the top one), or, with class_index,
        for the given classes of every image (explain_top is then ignored). Raises ImageError for
        the first image that cannot be used."""
        if isinstance(images, (list, tuple)):
            return [_unwrap(outcome) for outcome in self.explain_each(images, top_k, class_index, explain_top)]
        targets = self._targets_of(top_k, class_index, explain_top, (self.method.name,))
        outcomes = self._outcomes([(describe(images), images)], targets, (self.method,))
        return _unwrap(next(outcomes)[0])

    def explain_each(
        self,
        images: Iterable[ImageInput],
        top_k: int = DEFAULT_TOP_K,
        class_index: int | Sequence[int] | None = None,
        explain_top: int = DEFAULT_EXPLAIN_TOP,
    ) -> Iterator[Outcome]:
        """One Outcome per image, in order, batched by batch_size: a bad image gives an Outcome
        with its error and the others go on. Bad top_k, class_index or explain_top raise
        UsageError now."""
        targets = self._targets_of(top_k, class_index, explain_top, (self.method.name,))
        outcomes = self._outcomes(_named(images), targets, (self.method,))
        return (per_method[0] for per_method in outcomes)

    def explain_methods(
        self,
        images: Iterable[ImageInput],
        methods: Sequence[str],
        top_k: int = DEFAULT_TOP_K,
        class_index: int | Sequence[int] | None = None,
        explain_top: int = DEFAULT_EXPLAIN_TOP,
    ) -> Iterator[tuple[Outcome, ...]]:
        """explain_targets with these keywords: per image, one Outcome per method."""
        return self.explain_targets(images, self._targets_of(top_k, class_index, explain_top, methods))

    def explain_targets(self, images: Iterable[ImageInput], targets: Targets) -> Iterator[tuple[Outcome, ...]]:
        """Per image, in order, one Outcome per method of `targets` (in its order), batched by
        batch_size. Each image is decoded once and each batch runs the model once, fetching what
        all the methods need (Score-CAM's masked runs come on top). Targets out of the model's
        range raise UsageError now."""
        targets.check(self.card)
        chosen = tuple(METHODS[method](self._options) for method in targets.methods)
        return self._outcomes(_named(images), targets, chosen)

    def _targets_of(
        self, top_k: int, class_index: int | Sequence[int] | None, explain_top: int, methods: Sequence[str]
    ) -> Targets:
        """The keyword API's Targets, checked against this model."""
        if isinstance(methods, list):
            methods = tuple(methods)
        explain_top = explain_top if class_index is None else None
        return Targets(top_k, explain_top, class_index, methods).check(self.card)

    def _targets(self, top_k: int, class_index: int | Sequence[int] | None, explain_top: int) -> np.ndarray:
        """Kept for runtime.batch until it adopts runtime.targets (issue #25): Targets.check instead."""
        return self._targets_of(top_k, class_index, explain_top, (self.method.name,)).class_index_row()

    def _outcomes(
        self,
        named: Iterable[tuple[str, ImageInput]],
        targets: Targets,
        methods: tuple[CamMethod, ...],
    ) -> Iterator[tuple[Outcome, ...]]:
        iterator = iter(named)
        while chunk := list(itertools.islice(iterator, self.batch_size)):
            yield from self._explain_chunk(chunk, targets, methods)

    def _explain_chunk(
        self,
        chunk: list[tuple[str, ImageInput]],
        targets: Targets,
        methods: tuple[CamMethod, ...],
    ) -> list[tuple[Outcome, ...]]:
        decoded: list[tuple[str, Original | ImageError]] = []
        resized = []
        for source, image in chunk:
            try:
                original, model_input = self._read(source, image)
                resized.append(model_input)
                decoded.append((source, original))
            except ImageError as error:
                decoded.append((source, error))
            except MemoryError:
                decoded.append((source, ImageError(source, "not enough memory for this image")))
        good = [image for _, image in decoded if isinstance(image, Original)]
        if not good:
            return [(Outcome(source, error=error),) * len(methods) for source, error in decoded]
        inputs = np.stack(resized)
        del resized
        row = targets.class_index_row()
        outputs, raw_maps = self._outputs_and_maps(inputs, np.tile(row, (len(good), 1)), methods)
        position = iter(range(len(good)))
        outcomes = []
        for source, image in decoded:
            if isinstance(image, ImageError):
                outcomes.append((Outcome(source, error=image),) * len(methods))
                continue
            n = next(position)
            explained = outputs[contract.OUTPUT_EXPLAINED_CLASS][n]
            ranked_by_graph = explained if targets.classes is None else explained[:0]
            predictions, rank = self._predictions(
                outputs[contract.OUTPUT_PROBABILITIES][n], ranked_by_graph, targets.top_k
            )
            outcomes.append(tuple(
                self._outcome(
                    source, image, predictions, rank, explained, [maps[n] for maps in method_maps], method.name
                )
                for method, method_maps in zip(methods, raw_maps, strict=True)
            ))
        return outcomes

    def _read(self, source: str, image: ImageInput) -> tuple[Original, np.ndarray]:
        """The image as read and its model input. Up to KEEP_DECODED_PIXELS the decoded pixels are
        kept; a larger image is decoded again when its maps are drawn, so that a batch of large
        images is never held decoded all at once."""
        data = read_image(image, source)
        pixels = decode_image(data, source, self.max_pixels)
        keep = isinstance(data, np.ndarray) or pixels.shape[0] * pixels.shape[1] <= KEEP_DECODED_PIXELS
        original = Original(pixels if keep else data, source, pixels.shape[:2])
        return original, resize_for_model(pixels, self.card.input_size)

    def _outcome(self, source: str, image: Original, *details) -> Outcome:
        """The image's explanation, or the error (naming the image) that building its maps raised."""
        try:
            return Outcome(source, explanation=self._explanation(source, image, *details))
        except MemoryError:
            return Outcome(source, error=ImageError(source, "not enough memory to build its maps"))
        except Exception as error:  # anything this image's size or content can cause
            return Outcome(source, error=ImageError(
                source, f"cannot build its maps: {type(error).__name__}: {one_line(error)}"
            ))

    def _outputs_and_maps(
        self, inputs: np.ndarray, class_index: np.ndarray, methods: tuple[CamMethod, ...]
    ) -> tuple[dict[str, np.ndarray], list[list[np.ndarray]]]:
        """The plain run's outputs, and per method raw maps [N, K, h, w]: one per target layer,
        and with aug_smooth one per layer and augmentation (the same classes, maps flipped back)."""
        names = self._output_names(methods)
        outputs = self._fetch(names, inputs, class_index)
        explained = outputs[contract.OUTPUT_EXPLAINED_CLASS]
        raw_maps = [self._raw_maps(method, inputs, outputs) for method in methods]
        for flip, factor in AUGMENTATIONS[1:] if self.aug_smooth else ():
            augmented = inputs * np.float32(factor)
            augmented = augmented[:, :, ::-1] if flip else augmented
            augmented_outputs = self._fetch(names, augmented, explained)
            for method, method_maps in zip(methods, raw_maps, strict=True):
                maps = self._raw_maps(method, augmented, augmented_outputs)
                method_maps += [layer_maps[..., ::-1] if flip else layer_maps for layer_maps in maps]
        return outputs, raw_maps

    def _predict(self, inputs: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
        """Only the predictions and scores: what a method may ask for other images (Score-CAM)."""
        return self._fetch(PREDICTION_OUTPUTS, inputs, class_index)

    def _fetch(
        self, names: Sequence[str], inputs: np.ndarray, class_index: np.ndarray
    ) -> dict[str, np.ndarray]:
        feeds = {
            contract.INPUT_IMAGE: np.ascontiguousarray(inputs, dtype=np.float32),
            contract.INPUT_CLASS_INDEX: np.ascontiguousarray(class_index, dtype=np.int64),
        }
        try:
            results = self._session.run(list(names), feeds)
        except Exception as error:  # onnxruntime's own classes: a model failure, not an image's
            raise ModelError(f"{self.model_path}: model run failed ({one_line(error)})") from None
        return dict(zip(names, results, strict=True))

    def _raw_maps(
        self, method: CamMethod, inputs: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The method's raw maps [N, K, h, w], one array per target layer."""
        maps = []
        for i in range(len(self.card.layers)):
            layer_outputs = {
                name: outputs[contract.layer_output(name, i)] for name in method.layer_outputs
            }
            layer_outputs[contract.OUTPUT_EXPLAINED_CLASS] = outputs[contract.OUTPUT_EXPLAINED_CLASS]
            maps.append(
                method.raw_maps(LayerInputs(layer_outputs, inputs, self._predict, self.batch_size))
            )
        return maps

    def _predictions(
        self, probabilities: np.ndarray, ranked_by_graph: np.ndarray, top_k: int
    ) -> tuple[tuple[Prediction, ...], np.ndarray]:
        """One image's top_k predictions, and every class's rank (1 = the most probable).
        ranked_by_graph: the classes the graph chose as its most probable, in its order (by
        score, which breaks ties that the float32 probabilities cannot), which come first, so
        that the k-th prediction and the k-th top-k map are always the same class."""
        labels = self.card.labels
        by_probability = np.argsort(-probabilities, kind="stable")
        order = np.concatenate([ranked_by_graph, by_probability[~np.isin(by_probability, ranked_by_graph)]])
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(1, len(order) + 1)
        return tuple(Prediction(int(c), labels[c], float(probabilities[c])) for c in order[:top_k]), rank

    def _explanation(
        self,
        source: str,
        original: Original,
        predictions: tuple[Prediction, ...],
        rank: np.ndarray,
        explained: np.ndarray,
        raw_maps: list[np.ndarray],
        method: str,
    ) -> Explanation:
        """raw_maps: [K, h, w] per target layer (and augmentation), fused per class. Each
        full-size heatmap is rendered here for its peak, then dropped."""
        labels = self.card.labels
        maps = []
        for k, class_index in enumerate(explained.tolist()):
            class_maps = tuple(layer_maps[k] for layer_maps in raw_maps)
            maps.append(ClassMap(
                class_index, labels[class_index], int(rank[class_index]), render.low_resolution(class_maps),
                render.peak(render.fuse(class_maps, original.size)), class_maps, original.size,
            ))
        return Explanation(source, original, predictions, tuple(maps), method)


def _named(images: Iterable[ImageInput]) -> Iterator[tuple[str, ImageInput]]:
    """(description, image) for each image, described by its position where it has no name."""
    return ((describe(image, position), image) for position, image in enumerate(images))


def _unwrap(outcome: Outcome) -> Explanation:
    if outcome.error is not None:
        raise outcome.error
    return outcome.explanation
