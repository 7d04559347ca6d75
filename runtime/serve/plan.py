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

from ..targets import DEFAULT_METHOD, DEFAULT_TOP_K, Targets, TargetsError, parse_methods
from .batching import Settings
from .errors import HTTPError
from .limits import LIGHT_MAX_PIXELS, Limits

INCLUDES = ("heatmap", "overlay")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
HEAVY_METHODS = ("scorecam",)  # one model run per channel and image
INTEGER = re.compile(r"-?[0-9]+")
TARGET_ERROR_CODES = {
    "top_k": "bad_top_k",
    "explain_top": "bad_explain_top",
    "class": "class_out_of_range",
    "method": "unknown_method",
    None: "bad_parameter",  # two fields that conflict
}


@dataclass(frozen=True)
class Plan:
    """One request's settings, the images it asks back, and its size in maps."""

    settings: Settings
    include: tuple[str, ...]

    @property
    def maps(self) -> int:
        targets = self.settings.targets
        return len(targets.methods) * targets.maps_per_method

    def heavy(self, pixels: int) -> bool:
        """Work for the heavy lane: Score-CAM, aug_smooth's six runs, or a large image."""
        settings = self.settings
        return settings.aug_smooth or pixels > LIGHT_MAX_PIXELS or any(m in HEAVY_METHODS for m in settings.targets.methods)


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
    """The query string (name -> values) -> a Plan, or HTTPError naming what is wrong or too big.
    What to explain is runtime.targets' Targets; its errors become 422 with a code per field."""
    top_k = parse_int("top_k", given(query, "top_k", str(min(DEFAULT_TOP_K, num_classes))))
    explain_top_text = last(query, "explain_top")
    explain_top = None if explain_top_text is None else parse_int("explain_top", explain_top_text)
    classes = tuple(parse_int("class", c) for c in listed(query, "class")) or None
    include = tuple(dict.fromkeys(listed(query, "include")))
    for item in include:
        if item not in INCLUDES:
            raise HTTPError(422, "bad_include", f"include {item!r}: unknown; use heatmap and/or overlay")
    try:
        methods = parse_methods(",".join(dict.fromkeys(listed(query, "method")))) if listed(query, "method") else (DEFAULT_METHOD,)
        targets = Targets(top_k, explain_top, classes, methods).check(num_classes)
    except TargetsError as error:
        raise HTTPError(422, TARGET_ERROR_CODES[error.field], str(error)) from None
    plan = Plan(
        Settings(
            targets,
            aug_smooth=parse_flag("aug_smooth", last(query, "aug_smooth")),
            eigen_smooth=parse_flag("eigen_smooth", last(query, "eigen_smooth")),
        ),
        include,
    )
    if plan.maps > limits.max_maps:
        raise HTTPError(
            422,
            "too_many_maps",
            f"{len(methods)} method(s) x {targets.maps_per_method} class(es) = {plan.maps} maps: "
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
