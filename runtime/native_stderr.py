"""Catch what native code (onnxruntime, libtiff) writes straight to file descriptor 2."""

import contextlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

# fd 2 is process-wide: one capture at a time, so that two threads never swap it under each other.
_LOCK = threading.Lock()


@contextlib.contextmanager
def native_stderr() -> Iterator[io.StringIO]:
    """Redirect fd 2 to a temporary file for the block; its text is in the yielded buffer
    afterwards. Process-wide: keep the block short (other threads' stderr lands there too)."""
    text = io.StringIO()
    with _LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield text
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text.write(sink.read().decode(errors="replace"))
