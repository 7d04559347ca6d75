"""`python -m export.build`: a classifier -> one self-checked, self-describing Grad-CAM `.onnx`.

Two paths behind one command line (`export/arguments.py`): a Keras model (`keras_build.py`, with
TensorFlow) or an ONNX classifier, `--model PATH.onnx` (`onnx_import/`, onnx and onnxruntime only).
One line per step on stdout. Exit codes: 0 written; 1 the export failed (one line on stderr says
what and what to do; nothing is written); 2 bad command line.
"""

from __future__ import annotations

from .arguments import is_onnx, parse_args
from .errors import reported


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if is_onnx(args.model):
        from .onnx_import.build import import_model  # onnx + onnxruntime only, no TensorFlow

        return reported(lambda: import_model(args))
    from .keras_build import export_quietly  # TensorFlow only once the arguments are good

    return reported(lambda: export_quietly(args))


if __name__ == "__main__":
    raise SystemExit(main())
