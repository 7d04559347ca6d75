"""onnxcam serve: explanations over HTTP (Starlette + uvicorn), or on Ray Serve. Optional extra."""
