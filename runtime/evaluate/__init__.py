"""How faithful is each map: deletion (to black and to the blur), insertion, average drop, increase in confidence, pointing
game and the model-randomisation sanity check, run through the same .onnx with onnxruntime."""

from .baselines import edge_map, gaussian_map, random_map
from .metrics import (
    auc, blur_deletion_curve, blurred, confidence_change, deletion_curve, insertion_curve, pointing_hit,
)
from .run import METRICS, Results, evaluate, model_score
from .sanity import spearman

__all__ = [
    "METRICS", "Results", "auc", "blur_deletion_curve", "blurred", "confidence_change", "deletion_curve", "edge_map",
    "evaluate", "gaussian_map", "insertion_curve", "model_score", "pointing_hit", "random_map",
    "spearman",
]
