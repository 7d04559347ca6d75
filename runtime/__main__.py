"""python -m runtime: see runtime.cli. Ctrl-C while the libraries are still loading exits 130
quietly, like Ctrl-C later."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:
    sys.stderr.write("onnxcam: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
