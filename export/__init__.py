"""onnxcam export: turns a Keras classifier into a self-describing Grad-CAM ONNX model.

Runs once, on a machine with TensorFlow: `python -m export.build --help`.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is not the user's business.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
