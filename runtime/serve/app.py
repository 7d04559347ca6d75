"""The HTTP app: routes, JSON errors, metrics. `create_app(service)` -> a Starlette ASGI app."""

import asyncio
import base64
import hmac
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import render
from ..png import encode_png
from ..errors import ImageError, UsageError
from ..explainer import Explainer
from ..images import decode_image
from ..methods import METHODS
from ..results import Explanation, Outcome
from .batching import Batcher, QueueFull, Settings
from .limits import Limits

ROUTE_PATHS = ("/", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics")
PAGE = Path(__file__).with_name("page") / "index.html"
INCLUDES = ("heatmap", "overlay")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class HTTPError(Exception):
    """A client error: status, a short code, one sentence."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Metrics:
    """Prometheus metrics in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("onnxcam_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        self.latency = Histogram("onnxcam_request_seconds", "Request latency", ["path"], registry=self.registry)
        self.batch_size = Histogram(
            "onnxcam_batch_size", "Images per model run", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.queue_depth = Gauge("onnxcam_queue_depth", "Requests waiting for a model run", registry=self.registry)
        self.images = Counter("onnxcam_images", "Images explained (rate() gives images/s)", registry=self.registry)


class Service:
    """One warm Explainer, its batcher and metrics: what a server process (or a Ray replica) holds."""

    def __init__(self, explainer: Explainer, limits: Limits) -> None:
        self.explainer = explainer
        self.limits = limits
        self.metrics = Metrics()
        self.batcher = Batcher(
            explainer, limits.max_batch_size, limits.max_wait_ms / 1000, limits.max_queue, self.metrics.batch_size.observe
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        height, width = explainer.card.input_size
        explainer.explain(np.full((height, width, 3), 128, dtype=np.uint8), top_k=1)  # warm-up run
        self.ready = True


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def parse_flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise HTTPError(422, "bad_parameter", f"{name}={value!r}: use true or false")


def parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HTTPError(422, "bad_parameter", f"{name}={value!r}: not an integer") from None


def parse_settings(request: Request, num_classes: int) -> tuple[Settings, tuple[str, ...]]:
    """The query string -> Settings and the extra images asked for (heatmap, overlay)."""
    query = request.query_params
    methods = tuple(m.strip() for raw in query.getlist("method") for m in raw.split(",") if m.strip()) or ("gradcam",)
    for method in methods:
        if method not in METHODS:
            raise HTTPError(422, "unknown_method", f"method {method!r}: unknown; use one of {', '.join(METHODS)}")
    top_k = parse_int("top_k", query.get("top_k", "3"))
    if not 1 <= top_k <= num_classes:
        raise HTTPError(422, "bad_top_k", f"top_k {top_k}: must be between 1 and the model's {num_classes} classes")
    explain_top = parse_int("explain_top", query.get("explain_top", "1"))
    if not 1 <= explain_top <= num_classes:
        raise HTTPError(
            422, "bad_explain_top", f"explain_top {explain_top}: must be between 1 and the model's {num_classes} classes"
        )
    classes = tuple(parse_int("class", c) for raw in query.getlist("class") for c in raw.split(",") if c.strip())
    for index in classes:
        if not 0 <= index < num_classes:
            raise HTTPError(
                422, "class_out_of_range", f"class {index}: out of range (the model has {num_classes} classes, 0..{num_classes - 1})"
            )
    include = tuple(i.strip() for raw in query.getlist("include") for i in raw.split(",") if i.strip())
    for item in include:
        if item not in INCLUDES:
            raise HTTPError(422, "bad_include", f"include {item!r}: unknown; use heatmap and/or overlay")
    if classes and "explain_top" in query:
        raise HTTPError(422, "bad_parameter", "explain_top and class: give one of them")
    settings = Settings(
        methods=tuple(dict.fromkeys(methods)),
        top_k=top_k,
        explain_top=explain_top,
        classes=classes or None,
        aug_smooth=parse_flag("aug_smooth", query.get("aug_smooth")),
        eigen_smooth=parse_flag("eigen_smooth", query.get("eigen_smooth")),
    )
    return settings, include


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its Content-Length) passes max_bytes."""
    too_large = HTTPError(413, "body_too_large", f"the request body is over the {max_bytes} byte limit (--max-body-mb)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, max_bytes: int) -> bytes:
    """The image: the raw body, or the multipart field `file`."""
    body = await read_body(request, max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPError(422, "missing_file", "multipart request without a file field named 'file'")
    return await upload.read()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(render.encoded_image(image, "png")).decode("ascii")


def gray_png_base64(heat: np.ndarray) -> str:
    """A 0..1 heatmap as a base64 8-bit grayscale PNG."""
    return base64.b64encode(encode_png(np.round(heat * 255).astype(np.uint8))).decode("ascii")


def explanation_json(outcomes: tuple[Outcome, ...], include: tuple[str, ...], model: dict[str, Any]) -> dict[str, Any]:
    """Per-method outcomes of one image -> the response document (PNG encoding included: run it off the loop)."""
    explanations: list[Explanation] = [outcome.explanation for outcome in outcomes]
    maps = []
    for explanation in explanations:
        for class_map, overlay in zip(explanation.maps, explanation.overlays if "overlay" in include else [None] * len(explanation.maps)):
            entry: dict[str, Any] = {
                "method": explanation.method,
                "class_index": class_map.class_index,
                "label": class_map.label,
                "peak": list(class_map.peak),
                "cam": class_map.cam.tolist(),
            }
            if "heatmap" in include:
                entry["heatmap_png"] = gray_png_base64(class_map.heatmap)
            if overlay is not None:
                entry["overlay_png"] = png_base64(overlay)
            maps.append(entry)
    predictions = [
        {"index": p.index, "label": p.label, "probability": p.probability} for p in explanations[0].predictions
    ]
    return {"predictions": predictions, "maps": maps, "model": model}


def model_json(explainer: Explainer) -> dict[str, Any]:
    card = explainer.card
    return {"sha256": card.weights.get("sha256"), "layer": card.layer, "weights": card.weights}


def card_json(explainer: Explainer) -> dict[str, Any]:
    card = explainer.card
    return {
        "model": card.model,
        "classes": list(card.labels),
        "input_size": list(card.input_size),
        "layer": card.layer,
        "layers": list(card.layers),
        "preprocessing": card.preprocessing,
        "score": card.score,
        "weights": card.weights,
        "random_weights": card.random_weights,
        "self_check": card.self_check,
        "versions": card.versions,
        "provider": explainer.provider,
        "methods": list(METHODS),
    }


def create_app(service: Service | None = None) -> Starlette:
    """The ASGI app around `service` (set later on app.state.service when None, e.g. by a Ray replica)."""

    def service_of(request: Request) -> Service:
        service = getattr(request.app.state, "service", None)
        if service is None:
            raise HTTPError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})
        return service

    def check_key(request: Request, service: Service) -> None:
        expected = service.limits.api_key
        if expected is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPError(401, "unauthorized", "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)")

    async def explain(request: Request) -> Response:
        service = service_of(request)
        check_key(request, service)
        limits = service.limits
        settings, include = parse_settings(request, service.explainer.card.num_classes)
        data = await image_bytes(request, int(limits.max_body_mb * 1024 * 1024))
        try:
            image = await asyncio.to_thread(decode_image, data, "the request body", limits.max_pixels)
        except ImageError as error:
            status = 413 if "pixel" in error.problem else 422
            raise HTTPError(status, "too_many_pixels" if status == 413 else "bad_image", error.problem) from None
        try:
            future = service.batcher.submit(image, settings)
        except QueueFull:
            raise HTTPError(503, "queue_full", "the server is busy (queue full); retry shortly", {"Retry-After": "1"}) from None
        try:
            outcomes = await asyncio.wait_for(asyncio.shield(future), limits.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPError(504, "timeout", f"the explanation took over {limits.timeout_s:g} s (--timeout-s)") from None
        except UsageError as error:
            raise HTTPError(422, "bad_request", str(error)) from None
        failed = next((o.error for o in outcomes if o.error is not None), None)
        if failed is not None:
            raise HTTPError(422, "bad_image", failed.problem)
        service.metrics.images.inc()
        if "image/png" in request.headers.get("accept", ""):
            explanation = outcomes[0].explanation
            png = await asyncio.to_thread(lambda: bytes(render.encoded_image(explanation.overlays[0], "png")))
            return Response(png, media_type="image/png")
        document = await asyncio.to_thread(explanation_json, outcomes, include, model_json(service.explainer))
        return JSONResponse(document)

    async def model(request: Request) -> Response:
        service = service_of(request)
        check_key(request, service)
        return JSONResponse(card_json(service.explainer))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive", "pid": os.getpid()})  # the pid tells replicas apart

    async def readyz(request: Request) -> Response:
        service = service_of(request)
        return JSONResponse({"status": "ready" if service.ready else "warming"}, status_code=200 if service.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/explain", explain, methods=["POST"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service

    app.add_middleware(MetricsMiddleware)
    app.add_exception_handler(HTTPError, lambda request, error: error_response(error.status, error.code, error.message, error.headers))
    app.add_exception_handler(404, lambda request, error: error_response(404, "not_found", f"no route {request.url.path}; see GET / or /v1/model"))
    app.add_exception_handler(405, lambda request, error: error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"))
    app.add_exception_handler(Exception, lambda request, error: error_response(500, "internal", "internal error (a bug); see the server log"))
    return app


class MetricsMiddleware:
    """Counts every HTTP response by path and status, and times it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            service = scope["app"].state.service
            if service is not None:
                path = scope["path"] if scope["path"] in ROUTE_PATHS else "other"
                service.metrics.requests.labels(path, str(status[0])).inc()
                service.metrics.latency.labels(path).observe(time.perf_counter() - started)
