"""The TF recipe as one process, for the cold-start row:
`python -m benchmarks.tf_cold_start IMAGE WEIGHTS OUT_DIR` imports TensorFlow, builds ResNet50 and
loads WEIGHTS (as `ResNet50(weights="imagenet")` loads its cached file), runs keras.io's eager
Grad-CAM and writes the overlay as keras.io's `save_and_display_gradcam` does (OpenCV's JET map
stands in for matplotlib's)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np

from benchmarks.tf_recipe import INPUT_SIZE, LAYER, make_gradcam_heatmap, resnet50


def main(image_path: str, weights: str, out_dir: str) -> int:
    model = resnet50(weights)
    img_array = keras.utils.img_to_array(keras.utils.load_img(image_path, target_size=INPUT_SIZE))[None]
    heatmap = make_gradcam_heatmap(keras.applications.resnet50.preprocess_input(img_array), model, LAYER)[0]
    img = keras.utils.img_to_array(keras.utils.load_img(image_path))
    jet = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heatmap), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    jet = cv2.resize(jet, (img.shape[1], img.shape[0]))
    superimposed = keras.utils.array_to_img(jet * 0.4 + img)
    os.makedirs(out_dir, exist_ok=True)
    superimposed.save(os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0] + "_overlay.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
