"""The HTTP app: one route table, named handlers, JSON errors, metrics. `create_app(service)` -> a
Starlette ASGI app.

Each request's budget is decided before work starts (plan.py: maps, pixels, images asked back;
the body's size and read time here; the queue and model time as its deadline); a request whose
client is gone, or whose deadline passed, marks its job gone, and the model work stops.
"""

import asyncio
import base64
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import render
from ..errors import ImageError, UsageError
from ..explainer import Explainer
from ..images import decode_image
from ..methods import METHODS
from ..model_card import file_sha256
from ..png import encode_png
from ..results import ClassMap, Outcome, record
from .batching import Job, Lanes, QueueFull, lower_priority
from .limits import LIGHT_MAX_PIXELS, Limits
from .errors import HTTPError, error_response
from .middleware import Guard, InFlight, Observed
from .plan import Plan, check_image, image_pixels, parse_request

PAGE = Path(__file__).with_name("page") / "index.html"
CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent
BODY_TYPES = ("", "application/octet-stream", "multipart/form-data")  # and image/*
MAX_FORM_FIELDS = 8


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
        self.stopped = Gauge("onnxcam_runs_stopped", "Model work stopped because its requests were gone", registry=self.registry)


class Service:
    """One warm Explainer, its lanes, render thread and metrics: what a server process (or a Ray
    replica) holds."""

    def __init__(self, explainer: Explainer, limits: Limits) -> None:
        self.explainer = explainer
        self.limits = limits
        self.metrics = Metrics()
        self.lanes = Lanes(
            explainer, limits.max_batch_size, limits.max_wait_ms / 1000, limits.max_queue, self.metrics.batch_size.observe
        )
        # Images asked back from large originals are drawn one at a time, server-wide: the memory
        # they take is one overlay's, whatever the number of requests.
        self.render_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxcam-render", initializer=lower_priority)
        self.metrics.queue_depth.set_function(lambda: self.lanes.depth)
        self.metrics.stopped.set_function(lambda: self.lanes.stopped_runs)
        self.file_sha256 = file_sha256(explainer.model_path)
        height, width = explainer.card.input_size
        explainer.explain(np.full((height, width, 3), 128, dtype=np.uint8), top_k=1)  # warm-up run
        self.ready = True


def service_of(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})
    return service


def check_key(request: Request, service: Service) -> None:
    """X-API-Key: KEY or Authorization: Bearer KEY, when the server has a key."""
    expected = service.limits.api_key
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = request.headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPError(401, "unauthorized", "missing or wrong API key (send it as X-API-Key: KEY or Authorization: Bearer KEY)")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def wants_png(accept: str) -> bool:
    """Whether an Accept header prefers image/png to JSON: its q for image/png (or image/*) is
    above zero and above the q of application/json (or application/*). JSON on ties and by default."""
    png = json_q = 0.0
    png_specific = json_specific = -1
    for part in accept.split(","):
        kind, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        for target, specificity in (("image/png", 1), ("image/*", 0)):
            if kind == target and specificity > png_specific:
                png, png_specific = q, specificity
        for target, specificity in (("application/json", 1), ("application/*", 0)):
            if kind == target and specificity > json_specific:
                json_q, json_specific = q, specificity
    return png > 0 and png > json_q


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body: 413 as soon as it (or its Content-Length) passes --max-body-mb, 408 if
    it has not all arrived within --body-timeout-s, 499 if the client went away."""
    max_bytes = limits.max_body_bytes
    too_large = HTTPError(413, "body_too_large", f"the request body is over the {max_bytes} byte limit (--max-body-mb)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large

    async def chunks() -> bytes:
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(chunks(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, "body_timeout", f"the request body did not arrive within {limits.body_timeout_s:g} s (--body-timeout-s)") from None
    except ClientDisconnect:
        raise HTTPError(CLIENT_GONE, "client_gone", "the client closed the connection") from None


async def image_bytes(request: Request, limits: Limits) -> bytes:
    """The image: the raw body (image/*, application/octet-stream or no type), or the multipart field `file`."""
    kind = media_type(request)
    if kind not in BODY_TYPES and not kind.startswith("image/"):
        raise HTTPError(415, "unsupported_media_type", f"content type {kind!r}: send the image itself (image/*) or multipart/form-data")
    body = await read_body(request, limits)
    if kind != "multipart/form-data":
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=limits.max_body_bytes)
    except (HTTPException, MultiPartException) as error:
        detail = getattr(error, "detail", None) or getattr(error, "message", "")
        raise HTTPError(400, "bad_multipart", f"cannot read the multipart body: {detail}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPError(422, "missing_file", "multipart request without a file field named 'file'")
        return await upload.read()
    finally:
        await form.close()  # a part over 1 MiB was spooled to a temporary file: removed now


def image_error(error: ImageError) -> HTTPError:
    """413 for an image over --max-pixels (Pillow's own bomb check names it too), else 422."""
    if "pixel" in error.problem:
        return HTTPError(413, "too_many_pixels", f"{error.problem} (--max-pixels)")
    return HTTPError(422, "bad_image", error.problem)


async def image_size(data: bytes, limits: Limits) -> int:
    """The image's pixels from its header; if Pillow cannot read the header, the decoder's own error."""
    pixels = image_pixels(data)
    if pixels is None:
        try:
            await asyncio.to_thread(decode_image, data, "the request body", limits.max_pixels)
        except ImageError as error:
            raise image_error(error) from None
        raise HTTPError(422, "bad_image", "the request body: an image whose size cannot be read")
    return pixels


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (the body has been read: only http.disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer_of(request: Request, job: Job, timeout_s: float) -> tuple[Outcome, ...]:
    """The job's outcomes; 504 at the deadline, 499 if the client goes first. Either way, and on
    cancellation (server shutdown), the job is marked gone so its model work stops."""
    watcher = asyncio.ensure_future(disconnected(request))
    try:
        done, _ = await asyncio.wait({job.done, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if job.done in done:
            return job.done.result()
        if watcher in done:
            raise HTTPError(CLIENT_GONE, "client_gone", "the client closed the connection")
        raise HTTPError(504, "timeout", f"the explanation took over {timeout_s:g} s (--timeout-s)")
    finally:
        watcher.cancel()
        job.gone.set()
        job.done.cancel()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(render.encoded_image(image, "png")).decode("ascii")


def gray_png_base64(heat: np.ndarray) -> str:
    """A 0..1 heatmap as a base64 8-bit grayscale PNG."""
    return base64.b64encode(encode_png(np.round(heat * 255).astype(np.uint8))).decode("ascii")


def map_images(class_map: ClassMap, image: Callable[[], np.ndarray], include: tuple[str, ...]) -> dict[str, str]:
    """The images of one map that were asked for, as base64 PNGs; one full-size heatmap at a time."""
    heat = class_map.heatmap
    images = {}
    if "heatmap" in include:
        images["heatmap_png"] = gray_png_base64(heat)
    if "overlay" in include:
        images["overlay_png"] = png_base64(render.overlay(image(), heat))
    return images


def model_record(service: Service) -> dict[str, Any]:
    card = service.explainer.card
    weights_sha256 = card.weights.get("sha256")
    return {
        "file_sha256": service.file_sha256,  # sha256sum of the .onnx file
        "weights_sha256": weights_sha256,  # the exporter's hash of the weight tensors
        "sha256": weights_sha256,  # deprecated: the same as weights_sha256, kept for one version
        "layer": card.layer,
        "weights": card.weights,
    }


def card_record(service: Service) -> dict[str, Any]:
    explainer, card = service.explainer, service.explainer.card
    return {
        "model": card.model,
        "classes": list(card.labels),
        "input_size": list(card.input_size),
        "layer": card.layer,
        "layers": list(card.layers),
        "preprocessing": card.preprocessing,
        "score": card.score,
        "weights": card.weights,
        "file_sha256": service.file_sha256,
        "random_weights": card.random_weights,
        "self_check": card.self_check,
        "versions": card.versions,
        "provider": explainer.provider,
        "methods": list(METHODS),
        "limits": service.limits.public(),
    }


async def document_parts(service: Service, outcomes: tuple[Outcome, ...], plan: Plan, big: bool) -> AsyncIterator[bytes]:
    """The response document: the runtime's one record of the explanations (runtime.results:
    predictions, maps with cam) and the service's own fields (the model; each map's images asked
    for), one map at a time: each map's images are encoded (off the loop; from a large original
    in the server's one render thread) and sent before the next is made, and nothing more is made
    once the client has gone (Starlette stops the iteration)."""
    explanations = [outcome.explanation for outcome in outcomes]
    document = record(explanations, cam=True)
    maps = document.pop("maps")
    class_maps = [class_map for explanation in explanations for class_map in explanation.maps]
    document["model"] = model_record(service)
    yield json.dumps(document)[:-1].encode() + b', "maps": ['
    loop = asyncio.get_running_loop()
    executor = service.render_lane if big else None
    decoded: list[np.ndarray] = []

    def image() -> np.ndarray:  # decoded once per request, on first use
        if not decoded:
            decoded.append(explanations[0].image)
        return decoded[0]

    for position, (entry, class_map) in enumerate(zip(maps, class_maps, strict=True)):
        if plan.include:
            entry |= await loop.run_in_executor(executor, map_images, class_map, image, plan.include)
        yield (b", " if position else b"") + json.dumps(entry).encode()
    yield b"]}"


async def explain(request: Request) -> Response:
    """POST /v1/explain: one image -> predictions and maps (JSON), or the first overlay (PNG)."""
    service = service_of(request)
    check_key(request, service)
    limits = service.limits
    plan = parse_request(
        {name: request.query_params.getlist(name) for name in request.query_params}, service.explainer.card.num_classes, limits
    )
    data = await image_bytes(request, limits)
    pixels = await image_size(data, limits)
    check_image(plan, pixels, limits)
    try:
        job = service.lanes.submit(data, plan.settings, plan.heavy(pixels))
    except QueueFull:
        raise HTTPError(503, "queue_full", "the server is busy (queue full); retry shortly", {"Retry-After": "1"}) from None
    del data
    try:
        outcomes = await answer_of(request, job, limits.timeout_s)
    except UsageError as error:
        raise HTTPError(422, "bad_request", str(error)) from None
    failed = next((o.error for o in outcomes if o.error is not None), None)
    if failed is not None:
        raise image_error(failed)
    service.metrics.images.inc()
    request.state.images = 1
    big = pixels > LIGHT_MAX_PIXELS
    if wants_png(request.headers.get("accept", "")):
        explanation = outcomes[0].explanation
        executor = service.render_lane if big else None
        png = await asyncio.get_running_loop().run_in_executor(
            executor, lambda: bytes(render.encoded_image(render.overlay(explanation.image, explanation.maps[0].heatmap), "png"))
        )
        return Response(png, media_type="image/png")
    return StreamingResponse(document_parts(service, outcomes, plan, big), media_type="application/json")


async def model(request: Request) -> Response:
    """GET /v1/model: the model card, the methods and the limits."""
    service = service_of(request)
    check_key(request, service)
    return JSONResponse(card_record(service))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive", "pid": os.getpid()})  # the pid tells replicas apart


async def readyz(request: Request) -> Response:
    service = service_of(request)
    return JSONResponse({"status": "ready" if service.ready else "warming"}, status_code=200 if service.ready else 503)


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text; needs the API key when the server has one."""
    service = service_of(request)
    check_key(request, service)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8")


ROUTES = (
    Route("/", page, methods=["GET"]),
    Route("/v1/explain", explain, methods=["POST"]),
    Route("/v1/model", model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
)
PATHS = frozenset(route.path for route in ROUTES)  # the metrics' path labels; any other is "other"


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPError)
    return error_response(error.status, error.code, error.message, error.headers)


async def starlette_error(request: Request, error: Exception) -> Response:
    """Starlette's own HTTP errors (404, 405, ...) in the JSON shape."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        return error_response(404, "not_found", f"no route {request.url.path}; see GET / or /v1/model")
    if error.status_code == 405:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
    return error_response(error.status_code, "http_error", str(error.detail))


async def internal_error(request: Request, error: Exception) -> Response:
    return error_response(500, "internal", "internal error (a bug); see the server log")


def create_app(service: Service | None = None, access_log: bool = False) -> Starlette:
    """The ASGI app around `service` (set later on app.state.service when None, e.g. by a Ray
    replica). access_log: one line per request on stderr."""
    limits = service.limits if service is not None else Limits()
    app = Starlette(
        routes=list(ROUTES),
        middleware=[
            Middleware(Observed, paths=PATHS, access_log=access_log),
            Middleware(InFlight, limit=limits.max_requests, path="/v1/explain"),
            Middleware(Guard, allowed_hosts=limits.allowed_hosts, allow_origins=limits.allow_origins),
            Middleware(
                CORSMiddleware,
                allow_origins=limits.allow_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["X-API-Key", "Authorization", "Content-Type"],
            ),
        ],
        exception_handlers={HTTPError: http_error, HTTPException: starlette_error, Exception: internal_error},
    )
    app.state.service = service
    return app
