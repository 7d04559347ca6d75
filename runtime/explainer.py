"""Explainer: one warm onnxruntime session; images in, predictions and class heatmaps out."""

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from . import contract, render
from .errors import ImageError, ModelError, UsageError, one_line
from .images import DEFAULT_MAX_PIXELS, ImageInput, decode_image, describe, resize_for_model
from .methods import METHODS
from .model_card import ModelCard, read_model_card
from .results import ClassMap, Explanation, Outcome, Prediction

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
ORT_LOG_ERRORS_ONLY = 3


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Providers for `device`: auto = CUDA when onnxruntime offers it, else CPU."""
    if device not in DEVICES:
        raise UsageError(f"device {device!r}: unknown (use {', '.join(DEVICES)})")
    if device == "cuda" and CUDA not in available:
        raise UsageError(
            f"device cuda: onnxruntime offers no {CUDA} (only {', '.join(available)}); "
            "install onnxruntime-gpu or use device cpu"
        )
    if device == "cpu" or CUDA not in available:
        return [CPU]
    return [CUDA, CPU]


class Explainer:
    """Explains an onnxcam model's predictions. One instance may serve several threads:
    it keeps no per-call state, and onnxruntime's `run` is thread-safe."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "auto",
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        method: str = "gradcam",
    ) -> None:
        if method not in METHODS:
            raise UsageError(f"method {method!r}: unknown (use {', '.join(METHODS)})")
        if batch_size < 1:
            raise UsageError(f"batch size {batch_size}: must be at least 1")
        if max_pixels < 1:
            raise UsageError(f"max pixels {max_pixels}: must be at least 1")
        self.model_path = os.fspath(model_path)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.method = METHODS[method]()
        self._session = _open_session(
            self.model_path, choose_providers(device, ort.get_available_providers())
        )
        self.provider: str = self._session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise UsageError(f"device cuda: {CUDA} failed to load (check the CUDA and cuDNN libraries)")
        self.card: ModelCard = read_model_card(self.model_path, self._session)
        always = (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS)
        self._output_names = list(dict.fromkeys(always + self.method.required_outputs))

    def explain(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = 3,
        class_index: int | Sequence[int] | None = None,
    ) -> Explanation | list[Explanation]:
        """One image (path, bytes or HxWx3 uint8 RGB array) -> an Explanation; a list or tuple
        -> a list of them. class_index None explains the top_k classes, else the given classes
        of every image. Raises ImageError for the first image that cannot be used."""
        if isinstance(images, (list, tuple)):
            return [_unwrap(outcome) for outcome in self.explain_each(images, top_k, class_index)]
        targets = self._targets(top_k, class_index)
        return _unwrap(next(self._outcomes([(describe(images), images)], top_k, targets)))

    def explain_each(
        self,
        images: Iterable[ImageInput],
        top_k: int = 3,
        class_index: int | Sequence[int] | None = None,
    ) -> Iterator[Outcome]:
        """One Outcome per image, in order, batched by batch_size: a bad image gives an Outcome
        with its error and the others go on. Bad top_k or class_index raise UsageError now."""
        targets = self._targets(top_k, class_index)
        named = ((describe(image, position), image) for position, image in enumerate(images))
        return self._outcomes(named, top_k, targets)

    def _targets(self, top_k: int, class_index: int | Sequence[int] | None) -> np.ndarray:
        """The class_index row fed to the model: -1 = the k-th most probable class."""
        classes = self.card.num_classes
        if not 1 <= top_k <= classes:
            raise UsageError(f"top_k {top_k}: must be between 1 and the model's {classes} classes")
        if class_index is None:
            return np.full(top_k, -1, dtype=np.int64)
        indices = [class_index] if isinstance(class_index, (int, np.integer)) else list(class_index)
        if not indices:
            raise UsageError("class index: an empty list; give at least one class")
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise UsageError(f"class index {index!r}: not an integer")
            if not 0 <= index < classes:
                raise UsageError(
                    f"class index {index}: out of range (the model has {classes} classes, 0..{classes - 1})"
                )
        return np.array(indices, dtype=np.int64)

    def _outcomes(
        self, named: Iterable[tuple[str, ImageInput]], top_k: int, targets: np.ndarray
    ) -> Iterator[Outcome]:
        iterator = iter(named)
        while chunk := list(itertools.islice(iterator, self.batch_size)):
            yield from self._explain_chunk(chunk, top_k, targets)

    def _explain_chunk(
        self, chunk: list[tuple[str, ImageInput]], top_k: int, targets: np.ndarray
    ) -> list[Outcome]:
        decoded: list[tuple[str, np.ndarray | ImageError]] = []
        for source, image in chunk:
            try:
                decoded.append((source, decode_image(image, source, self.max_pixels)))
            except ImageError as error:
                decoded.append((source, error))
        good = [image for _, image in decoded if isinstance(image, np.ndarray)]
        if not good:
            return [Outcome(source, error=error) for source, error in decoded]
        outputs = self._run(good, targets)
        raw_maps = iter(self.method.raw_maps(outputs))
        probabilities = iter(outputs[contract.OUTPUT_PROBABILITIES])
        explained = iter(outputs[contract.OUTPUT_EXPLAINED_CLASS])
        outcomes = []
        for source, image in decoded:
            if isinstance(image, ImageError):
                outcomes.append(Outcome(source, error=image))
                continue
            explanation = self._explanation(
                source, image, next(probabilities), next(explained), next(raw_maps), top_k
            )
            outcomes.append(Outcome(source, explanation=explanation))
        return outcomes

    def _run(self, images: list[np.ndarray], targets: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {
            contract.INPUT_IMAGE: np.stack(
                [resize_for_model(image, self.card.input_size) for image in images]
            ),
            contract.INPUT_CLASS_INDEX: np.tile(targets, (len(images), 1)),
        }
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds), strict=True))

    def _explanation(
        self,
        source: str,
        image: np.ndarray,
        probabilities: np.ndarray,
        explained: np.ndarray,
        raw_maps: np.ndarray,
        top_k: int,
    ) -> Explanation:
        labels = self.card.labels
        order = np.argsort(-probabilities, kind="stable")
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(1, len(order) + 1)
        predictions = tuple(Prediction(int(c), labels[c], float(probabilities[c])) for c in order[:top_k])
        maps = []
        for class_index, raw_map in zip(explained.tolist(), raw_maps, strict=True):
            heat = render.heatmap(raw_map, image.shape[:2])
            maps.append(
                ClassMap(class_index, labels[class_index], int(rank[class_index]), heat, render.peak(heat))
            )
        return Explanation(source, image, predictions, tuple(maps))


def _open_session(path: str, providers: list[str]) -> ort.InferenceSession:
    if not os.path.isfile(path):
        raise ModelError(f"{path}: model file not found")
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own classes for each way a file is bad
        raise ModelError(f"{path}: cannot load model, corrupt or not ONNX ({one_line(error)})") from None


def _unwrap(outcome: Outcome) -> Explanation:
    if outcome.error is not None:
        raise outcome.error
    return outcome.explanation
