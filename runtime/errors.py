"""The errors onnxcam raises on purpose; each message is one line that names its input."""


class OnnxcamError(Exception):
    """Base class: str(error) is one line, '<input>: <problem>'."""


class ModelError(OnnxcamError):
    """The .onnx file is missing, corrupt, or not an onnxcam model."""


class UsageError(OnnxcamError):
    """The request cannot run: unknown device or method, class index or top_k out of range."""


class ImageError(OnnxcamError):
    """One input image cannot be used: missing, empty, truncated, not an image, too large."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def one_line(error: BaseException) -> str:
    """The text of an exception from another library, squeezed onto one line."""
    return " ".join(str(error).split()) or type(error).__name__
