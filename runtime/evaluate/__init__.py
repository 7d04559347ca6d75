"""How faithful is each map: RISE deletion / insertion, ROAD, average drop / increase in confidence
(torchcam's and pytorch-grad-cam's definitions), pointing game and the model-randomisation sanity
check, against CAM-like random baselines, run through the same .onnx with onnxruntime."""

from .baselines import edge_map, gaussian_map, layer_noise, pixel_noise, random_cam
from .metrics import (
    Normalisation, auc, blur_deletion_curve, blurred, confidence_change, deletion_curve, insertion_curve,
    pointing_hit, rise_blurred, torchcam_insertion_curve,
)
from .road import road_scores
from .run import DEFAULT_METRICS, METRICS, Results, evaluate, model_score
from .sanity import spearman

__all__ = [
    "DEFAULT_METRICS", "METRICS", "Normalisation", "Results", "auc", "blur_deletion_curve", "blurred",
    "confidence_change", "deletion_curve", "edge_map", "evaluate", "gaussian_map", "insertion_curve", "layer_noise",
    "model_score", "pixel_noise", "pointing_hit", "random_cam", "rise_blurred", "road_scores", "spearman",
    "torchcam_insertion_curve",
]
