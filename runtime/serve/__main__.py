"""python -m runtime.serve --model M.onnx [...]: the HTTP server (uvicorn), or Ray Serve with --ray."""

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import OnnxcamError
from ..explainer import Explainer
from ..images import DEFAULT_MAX_PIXELS
from .limits import Limits

SERVE_HINT = 'the server needs the serve extra; install it with: pip install "onnxcam[serve]"'


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onnxcam-serve", description="Serve Grad-CAM explanations over HTTP.")
    parser.add_argument("--model", required=True, help="the onnxcam .onnx file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--max-body-mb", type=float, default=20.0)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--api-key-file", type=Path, help="clients must send this key (X-API-Key or Bearer)")
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve (pip install 'onnxcam[ray]')")
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1)
    scale.add_argument("--autoscale", help="MIN,MAX replicas")
    return parser.parse_args(argv)


def limits_of(args: argparse.Namespace) -> Limits:
    """The Limits the flags ask for; ValueError (one line) on nonsense."""
    for name in ("max_batch_size", "max_queue", "max_pixels", "port", "replicas"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    for name in ("max_wait_ms", "max_body_mb", "timeout_s"):
        value = getattr(args, name)
        if value < 0 or (value == 0 and name != "max_wait_ms"):
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be positive")
    api_key = None
    if args.api_key_file is not None:
        try:
            api_key = args.api_key_file.read_text().strip()
        except OSError as error:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({error.strerror})") from None
        if not api_key:
            raise ValueError(f"--api-key-file {args.api_key_file}: empty")
    return Limits(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        timeout_s=args.timeout_s,
        api_key=api_key,
    )


def autoscale_of(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--autoscale {text!r}: give MIN,MAX, e.g. 1,4") from None
    if not 1 <= low <= high:
        raise ValueError(f"--autoscale {text!r}: need 1 <= MIN <= MAX")
    return low, high


def serve_uvicorn(args: argparse.Namespace, limits: Limits) -> None:
    import uvicorn

    from .app import Service, create_app

    explainer = Explainer(args.model, device=args.device, batch_size=limits.max_batch_size, max_pixels=limits.max_pixels)
    app = create_app(Service(explainer, limits))
    # uvicorn on SIGTERM: stops accepting and finishes the requests in flight; then it re-raises the
    # signal to the handler it found, which must not kill the process: exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=limits.timeout_s)


def serve_ray(args: argparse.Namespace, limits: Limits) -> None:
    from .ray_app import deployment

    application = deployment(str(Path(args.model).resolve()), args.device, limits, args.replicas, autoscale_of(args.autoscale))
    import ray
    from ray import serve

    ray.init(address=args.ray_address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application, name="onnxcam", route_prefix="/")
    print(f"onnxcam on Ray Serve at http://{args.host}:{args.port}/ (Ctrl-C or SIGTERM to stop)", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        limits = limits_of(args)
        autoscale_of(args.autoscale)
        if not Path(args.model).is_file():
            raise ValueError(f"--model {args.model}: no such file")
        if args.ray:
            serve_ray(args, limits)
        else:
            serve_uvicorn(args, limits)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        print(f"onnxcam-serve: {error if 'onnxcam[' in str(error) else SERVE_HINT + f' (missing {missing})'}", file=sys.stderr)
        return 2
    except (OnnxcamError, ValueError) as error:
        print(f"onnxcam-serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
