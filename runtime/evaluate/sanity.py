"""Model-randomisation sanity check (Adebayo et al., arXiv 1810.03292): a map that barely changes
when the model's weights are random does not explain the model."""

import numpy as np

DEFAULT_THRESHOLD = 0.5


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of the flattened values, ties given their average rank."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    positions = np.empty(len(flat))
    positions[order] = np.arange(len(flat))
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, positions) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant (no order to share)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def flagged(correlations: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """A method fails the check when its mean correlation is above the threshold."""
    return bool(np.mean(correlations) > threshold)
