"""The server's limits, as the flags set them (no third-party imports: the CLI reads them first)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_body_mb: float = 20.0
    max_pixels: int = 40_000_000
    timeout_s: float = 30.0
    api_key: str | None = None
