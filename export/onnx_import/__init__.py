"""Import any ONNX image classifier (PyTorch, timm, tf2onnx...) as an onnxcam model.

Needs only onnx, onnxruntime and numpy: never TensorFlow nor PyTorch.
`python -m export.build --model classifier.onnx ...` (`python -m export.build --help` lists every flag).
"""
