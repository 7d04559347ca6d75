"""The import's former entry point, kept for one version: `export.build.main` takes `--model PATH.onnx`
itself (one command line for both paths, `export/arguments.py`)."""

from ..build import main

__all__ = ["main"]
