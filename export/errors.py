"""The one error type of the export half: its message is the one line the user sees; `reported`
turns any failure of an export into that line and its exit code."""

import os
import re
import sys
from collections.abc import Callable


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


def reported(action: Callable[[], None]) -> int:
    """Run one export: 0 done; 1 failed, with one line on stderr (an ExportError's own, or the
    unexpected error's type and message: the traceback only with ONNXCAM_DEBUG=1)."""
    try:
        action()
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export interrupted: nothing was written", file=sys.stderr)
        return 1
    except MemoryError:
        print("export failed: out of memory; nothing was written", file=sys.stderr)
        return 1
    except Exception as error:  # a bug of ours or of a library: still one line, no traceback
        if os.environ.get("ONNXCAM_DEBUG"):
            raise
        print(f"export failed: unexpected {type(error).__name__}: {one_line(error)} "
              "(set ONNXCAM_DEBUG=1 for the traceback); nothing was written", file=sys.stderr)
        return 1
    return 0
