"""The same app as a Ray Serve deployment (serve.ingress): one onnxruntime session per replica."""

from typing import Any

from .app import Service, create_app
from .limits import Limits, explainer_for

RAY_HINT = 'Ray Serve is not installed; install it with: pip install "onnxcam[ray]"'


def deployment(model_path: str, device: str, limits: Limits, replicas: int = 1, autoscale: tuple[int, int] | None = None) -> Any:
    """A bound Ray Serve application for `model_path` (ImportError, naming the extra, without Ray)."""
    try:
        from ray import serve
    except ImportError:
        raise ImportError(RAY_HINT) from None

    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1 if device == "cuda" else 0}}
    if autoscale is not None:
        options["autoscaling_config"] = {"min_replicas": autoscale[0], "max_replicas": autoscale[1]}
    else:
        options["num_replicas"] = replicas

    @serve.deployment(name="onnxcam", **options)
    @serve.ingress()
    class OnnxcamDeployment:
        """One replica: its own Explainer (session), batcher and metrics, behind the same routes."""

        def __init__(self, model_path: str, device: str, limits: Limits) -> None:
            self.service = Service(explainer_for(model_path, device, limits), limits)

        def __serve_build_asgi_app__(self) -> Any:
            return create_app(self.service)

    return OnnxcamDeployment.bind(model_path, device, limits)
