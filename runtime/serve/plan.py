"""What one request asks for, checked against its budget before any work starts.

`parse_request` turns the query string into a Plan; `check_image` measures the image from its
header (no decoding) and refuses it if the maps and images asked back would pass the limits.
"""

import io
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from ..methods import METHODS
from .batching import Settings
from .limits import LIGHT_MAX_PIXELS, Limits

INCLUDES = ("heatmap", "overlay")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
HEAVY_METHODS = ("scorecam",)  # one model run per channel and image
INTEGER = re.compile(r"-?[0-9]+")


class HTTPError(Exception):
    """A client error: status, a short code, one sentence."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass(frozen=True)
class Plan:
    """One request's settings, the images it asks back, and its size in maps."""

    settings: Settings
    include: tuple[str, ...]

    @property
    def maps(self) -> int:
        per_method = len(self.settings.classes) if self.settings.classes else self.settings.explain_top
        return len(self.settings.methods) * per_method

    def heavy(self, pixels: int) -> bool:
        """Work for the heavy lane: Score-CAM, aug_smooth's six runs, or a large image."""
        settings = self.settings
        return settings.aug_smooth or pixels > LIGHT_MAX_PIXELS or any(m in HEAVY_METHODS for m in settings.methods)


def parse_flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise HTTPError(422, "bad_parameter", f"{name}={value!r}: use true or false")


def parse_int(name: str, value: str) -> int:
    """Digits only (int() would also take '1_0', ' 7' and '٣')."""
    if not INTEGER.fullmatch(value):
        raise HTTPError(422, "bad_parameter", f"{name}={value!r}: not an integer")
    return int(value)


def listed(query: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """Every value of a repeated and/or comma-separated parameter."""
    return [item.strip() for raw in query.get(name, ()) for item in raw.split(",") if item.strip()]


def last(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The last value of a parameter given once or more; None if absent."""
    values = query.get(name)
    return values[-1] if values else None


def given(query: Mapping[str, Sequence[str]], name: str, default: str) -> str:
    value = last(query, name)
    return default if value is None else value


def parse_request(query: Mapping[str, Sequence[str]], num_classes: int, limits: Limits) -> Plan:
    """The query string (name -> values) -> a Plan, or HTTPError naming what is wrong or too big."""
    methods = tuple(dict.fromkeys(listed(query, "method"))) or ("gradcam",)
    for method in methods:
        if method not in METHODS:
            raise HTTPError(422, "unknown_method", f"method {method!r}: unknown; use one of {', '.join(METHODS)}")
    top_k = parse_int("top_k", given(query, "top_k", "3"))
    if not 1 <= top_k <= num_classes:
        raise HTTPError(422, "bad_top_k", f"top_k {top_k}: must be between 1 and the model's {num_classes} classes")
    explain_top = parse_int("explain_top", given(query, "explain_top", "1"))
    if not 1 <= explain_top <= num_classes:
        raise HTTPError(
            422, "bad_explain_top", f"explain_top {explain_top}: must be between 1 and the model's {num_classes} classes"
        )
    classes = tuple(parse_int("class", c) for c in listed(query, "class"))
    for index in classes:
        if not 0 <= index < num_classes:
            raise HTTPError(
                422, "class_out_of_range", f"class {index}: out of range (the model has {num_classes} classes, 0..{num_classes - 1})"
            )
    include = tuple(dict.fromkeys(listed(query, "include")))
    for item in include:
        if item not in INCLUDES:
            raise HTTPError(422, "bad_include", f"include {item!r}: unknown; use heatmap and/or overlay")
    if classes and "explain_top" in query:
        raise HTTPError(422, "bad_parameter", "explain_top and class: give one of them")
    plan = Plan(
        Settings(
            methods=methods,
            top_k=top_k,
            explain_top=explain_top,
            classes=classes or None,
            aug_smooth=parse_flag("aug_smooth", last(query, "aug_smooth")),
            eigen_smooth=parse_flag("eigen_smooth", last(query, "eigen_smooth")),
        ),
        include,
    )
    if plan.maps > limits.max_maps:
        raise HTTPError(
            422,
            "too_many_maps",
            f"{len(methods)} method(s) x {plan.maps // len(methods)} class(es) = {plan.maps} maps: "
            f"over the limit of {limits.max_maps} per request (--max-maps)",
        )
    return plan


def image_pixels(data: bytes) -> int | None:
    """width x height from the image's header (nothing decoded); None if Pillow cannot tell."""
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as opened:
            warnings.simplefilter("ignore")
            return opened.width * opened.height
    except Exception:  # not an image, or one Pillow cannot open: the decoder's check names it
        return None


def check_image(plan: Plan, pixels: int, limits: Limits) -> None:
    """Refuse, before any work, an image over --max-pixels or images asked back over --max-output-mpx."""
    if pixels > limits.max_pixels:
        raise HTTPError(413, "too_many_pixels", f"image is {pixels} pixels, over the limit of {limits.max_pixels} (--max-pixels)")
    output = plan.maps * len(plan.include) * pixels
    if output > limits.max_output_pixels:
        raise HTTPError(
            413,
            "output_too_large",
            f"{plan.maps} maps x {len(plan.include)} image(s) x {pixels} pixels = {output} pixels asked back: over the limit of "
            f"{limits.max_output_pixels} ({limits.max_output_mpx:g} Mpx, --max-output-mpx) per request; ask fewer maps or images, or send a smaller image",
        )
