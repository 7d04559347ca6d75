"""The one error type of the export half: its message is the one line the user sees."""

import re


class ExportError(Exception):
    """An export step failed; str(error) says what failed and what to do."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """A library's error message folded onto one line, cut at `limit` characters."""
    return " ".join(str(error).split())[:limit]


def onnxruntime_line(error: BaseException, limit: int = 300) -> str:
    """onnxruntime's error message on one line, without its status prefix and the C++ source location
    ("[ONNXRuntimeError] : 1 : FAIL : ", "/onnxruntime_src/...h:91 onnxruntime::F(args) "), cut at `limit`."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", one_line(error, 100_000))
    return re.sub(r"/onnxruntime_src/\S+ (?:[\w:<>&*]+ )?[\w:~<>]+\([^)]*\)(?: const)? ", "", text)[:limit]
