"""python -m runtime.serve --model M.onnx [...]: the HTTP server (uvicorn), or Ray Serve with --ray."""

import argparse
import math
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .. import commandline as cl
from ..errors import UsageError
from ..session import DEVICES
from .limits import Limits, explainer_for

PROG = "onnxcam-serve"
SERVE_HINT = 'the server needs the serve extra; install it with: pip install "onnxcam[serve]"'
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULTS = Limits()


def build_parser() -> argparse.ArgumentParser:
    parser = cl.OneLineParser(
        prog=PROG,
        description="Serve Grad-CAM explanations over HTTP. Every request gets a budget decided before work starts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    cl.add_model(parser)
    add("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; see docs/serve.md first)")
    add("--port", type=int, default=8000, help="TCP port, 1-65535")
    add("--device", choices=DEVICES, default="auto", help="where the model runs")
    add("--max-batch-size", type=int, default=DEFAULTS.max_batch_size, help="images per model run")
    add("--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms, help="how long a run waits for more requests to batch")
    add("--max-queue", type=int, default=DEFAULTS.max_queue, help="requests waiting per lane (light, heavy); more get 503")
    add("--max-body-mb", type=float, default=DEFAULTS.max_body_mb, help="largest request body, MiB (413 over it)")
    add("--max-pixels", type=int, default=DEFAULTS.max_pixels, help="largest image, pixels (413 over it)")
    add("--max-maps", type=int, default=DEFAULTS.max_maps, help="maps per request: methods x explained classes (422 over it)")
    add("--max-channels", type=int, default=DEFAULTS.max_channels,
        help="Score-CAM re-runs the model for at most this many channels per image (its cost: ~this / --max-batch-size runs)")
    add("--max-output-mpx", type=float, default=DEFAULTS.max_output_mpx,
        help="images asked back per request (include=overlay,heatmap), maps x images x image pixels, in Mpx (413 over it)")
    add("--timeout-s", type=float, default=DEFAULTS.timeout_s,
        help="queue and model time of a request (504 after it; its work stops); also the most SIGTERM waits")
    add("--max-requests", type=int, default=DEFAULTS.max_requests,
        help="explain requests in flight; over it they get 503. Bodies in memory <= this x --max-body-mb")
    add("--max-connections", type=int, default=DEFAULTS.max_connections,
        help="open connections, idle ones included (uvicorn's limit_concurrency); over it requests get 503")
    add("--header-timeout-s", type=float, default=DEFAULTS.header_timeout_s, help="a connection must send its request headers within this")
    add("--body-timeout-s", type=float, default=DEFAULTS.body_timeout_s, help="a request must send its body within this (408 after it)")
    add("--keep-alive-s", type=float, default=DEFAULTS.keep_alive_s, help="idle keep-alive connections close after this")
    add("--api-key-file", type=Path, help="clients must send the key in this file (X-API-Key: KEY or Authorization: Bearer KEY) "
        "to /v1/explain, /v1/model and /metrics; the page asks for it")
    add("--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="another site whose pages may call the API, e.g. https://app.example.com (repeatable); others get 403")
    add("--allowed-host", action="append", default=[], metavar="HOST",
        help="a Host header to answer (repeatable; default: the loopback names when --host is loopback, else any)")
    add("--quiet", action="store_true", help="no access log line per request")
    add("--ray", action="store_true", help="serve on Ray Serve (pip install 'onnxcam[ray]')")
    add("--ray-address", help="an existing Ray cluster (default: start a local one)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas")
    scale.add_argument("--autoscale", help="MIN,MAX Ray Serve replicas")
    return parser


COUNTS = ("max_batch_size", "max_queue", "max_pixels", "max_maps", "max_channels", "max_requests", "max_connections", "replicas")
POSITIVE = ("max_body_mb", "max_output_mpx", "timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_s")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def limits_of(args: argparse.Namespace) -> Limits:
    """The Limits the flags ask for; UsageError (one line) on nonsense (nan, inf, <= 0, a bad port)."""
    for name in COUNTS:
        if getattr(args, name) < 1:
            raise UsageError(f"{flag(name)} {getattr(args, name)}: must be at least 1")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be between 1 and 65535")
    for name in (*POSITIVE, "max_wait_ms"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0 or (value == 0 and name != "max_wait_ms"):
            raise UsageError(f"{flag(name)} {value}: must be a finite number above 0" + (" (or 0)" if name == "max_wait_ms" else ""))
    api_key = None
    if args.api_key_file is not None:
        try:
            api_key = args.api_key_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--api-key-file {args.api_key_file}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
        if not api_key:
            raise UsageError(f"--api-key-file {args.api_key_file}: empty")
    hosts = tuple(args.allowed_host) or (LOOPBACK_HOSTS if args.host in LOOPBACK_HOSTS else ("*",))
    return Limits(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        max_maps=args.max_maps,
        max_channels=args.max_channels,
        max_output_mpx=args.max_output_mpx,
        timeout_s=args.timeout_s,
        max_requests=args.max_requests,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        keep_alive_s=args.keep_alive_s,
        api_key=api_key,
        allow_origins=tuple(args.allow_origin),
        allowed_hosts=hosts,
    )


def autoscale_of(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--autoscale {text!r}: give MIN,MAX, e.g. 1,4") from None
    if not 1 <= low <= high:
        raise UsageError(f"--autoscale {text!r}: need 1 <= MIN <= MAX")
    return low, high


def start_line(model: str, layer: str, url: str, limits: Limits) -> str:
    """What the server says when it listens: the model, layer, address and limits."""
    return (
        f"onnxcam-serve: {model} (layer {layer}) on {url} - limits: body {limits.max_body_mb:g} MiB in {limits.body_timeout_s:g} s, "
        f"{limits.max_pixels} pixels, {limits.max_maps} maps, {limits.max_output_mpx:g} Mpx back, {limits.timeout_s:g} s per request, "
        f"{limits.max_requests} requests in flight, {limits.max_connections} connections, queue {limits.max_queue} per lane; "
        f"API key {'required' if limits.api_key else 'not set'}; Ctrl-C or SIGTERM to stop"
    )


def serve_uvicorn(args: argparse.Namespace, limits: Limits) -> None:
    from .app import Service, create_app
    from .server import Server, config_for

    explainer = explainer_for(args.model, args.device, limits)
    app = create_app(Service(explainer, limits), access_log=not args.quiet)
    url = f"http://{args.host}:{args.port}/"
    # uvicorn re-raises SIGTERM to the handler it found once it has drained: that must not kill the process.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server = Server(config_for(app, args.host, args.port, limits), start_line(explainer.card.model, explainer.card.layer, url, limits))
    server.run()
    if not server.started:
        raise UsageError(f"cannot listen on {args.host}:{args.port} (see the line above)")
    cl.report(PROG, "stopped")


def serve_ray(args: argparse.Namespace, limits: Limits) -> None:
    from .ray_app import deployment

    application = deployment(str(Path(args.model).resolve()), args.device, limits, args.replicas, autoscale_of(args.autoscale))
    import ray
    from ray import serve

    ray.init(address=args.ray_address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application, name="onnxcam", route_prefix="/")
    cl.report(PROG, f"on Ray Serve at http://{args.host}:{args.port}/ (Ctrl-C or SIGTERM to stop)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()


def body(args: argparse.Namespace) -> int:
    """Check every flag, then serve until SIGTERM or Ctrl-C (a server's normal stop: exit 0)."""
    limits = limits_of(args)
    autoscale_of(args.autoscale)
    if not Path(args.model).is_file():
        raise UsageError(f"--model {args.model}: no such file")
    try:
        if args.ray:
            serve_ray(args, limits)
        else:
            serve_uvicorn(args, limits)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        raise UsageError(str(error) if "onnxcam[" in str(error) else f"{SERVE_HINT} (missing {missing})") from None
    return cl.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return cl.run_main(PROG, build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
