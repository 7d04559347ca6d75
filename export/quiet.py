"""Keep TensorFlow's native start-up logging off the user's terminal.

TF 2.21 writes absl/C++ lines (CUDA probing, oneDNN notes) straight to file descriptor 2
before TF_CPP_MIN_LOG_LEVEL is read, so the descriptor itself is redirected while the
export runs; the captured text is handed back for the rare case where it explains a crash.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator


@contextmanager
def captured_stderr() -> Iterator[IO[bytes]]:
    """Send file descriptor 2 (native and Python stderr) to a temporary file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
