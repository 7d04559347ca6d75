"""The server's limits, as the flags set them (no third-party imports: the CLI reads them first).

Every request gets its budget from these before any work starts: its body (max_body_mb, read
within body_timeout_s), its image (max_pixels), its maps (max_maps), the images it asks back
(max_output_mpx), its time in the queue and the model (timeout_s). The cap on explain requests in flight bounds
what they hold together: bodies in memory <= max_requests x max_body_mb.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..explainer import Explainer

# Images up to this size are light work: decoded, explained and drawn in milliseconds. Larger
# images, Score-CAM and aug_smooth go to the heavy lane, so that they never delay light requests.
LIGHT_MAX_PIXELS = 1_000_000


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64  # per lane
    max_body_mb: float = 20.0
    max_pixels: int = 16_000_000
    max_maps: int = 16  # methods x explained classes, per request
    max_channels: int = 256  # Score-CAM's model runs per image (the runtime's default)
    max_output_mpx: float = 64.0  # overlays and heatmaps asked back x image pixels, per request
    timeout_s: float = 30.0  # queue and model time of one request; also the SIGTERM drain bound
    max_requests: int = 32  # explain requests in flight (reading, queued, answering): over it, 503
    max_connections: int = 256  # uvicorn's limit_concurrency: open connections; over it, 503
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this
    body_timeout_s: float = 30.0  # and its body within this
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()  # other origins whose pages may call the API (CORS)
    allowed_hosts: tuple[str, ...] = ("*",)  # Host header values accepted ("*": any)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_output_pixels(self) -> int:
        return int(self.max_output_mpx * 1_000_000)

    def public(self) -> dict[str, float | int]:
        """The limits a client may plan by (what /v1/model shows; never the key)."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_pixels": self.max_pixels,
            "max_maps": self.max_maps,
            "max_channels": self.max_channels,
            "max_output_pixels": self.max_output_pixels,
            "timeout_s": self.timeout_s,
        }


def explainer_for(model_path: str, device: str, limits: Limits) -> "Explainer":
    """The server's Explainer: runs of at most max_batch_size images, max_pixels, max_channels."""
    from ..explainer import Explainer

    return Explainer(
        model_path, device=device, batch_size=limits.max_batch_size, max_pixels=limits.max_pixels, max_channels=limits.max_channels
    )
