"""ROAD, RemOve And Debias (Rong et al., arXiv 2202.00449), as pytorch-grad-cam ships it
(metrics/road.py): the removed pixels are filled by a noisy linear imputation of their
neighbours, so that the shape of what was removed does not leak to the model.

At percentile p of the map, most-relevant-first (MoRF) keeps the pixels below the map's p-th
percentile and imputes the others; least-relevant-first (LeRF) does the same with 1 - map. Each
score is the class's probability after imputation minus before, averaged over the percentiles;
pytorch-grad-cam's ROADCombined is (LeRF - MoRF) / 2. Lower MoRF, higher LeRF and higher combined
are better. Needs scipy (the sparse solve): `pip install onnxcam[evaluate]`.
"""

import numpy as np

from ..errors import OnnxcamError
from .metrics import Normalisation, Score

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01  # pytorch-grad-cam's NoisyLinearImputer: absolute, on the normalised tensor
# (offset in rows, offset in columns) -> weight of that neighbour in the imputation
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
              ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def impute(image: np.ndarray, keep: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """The image with every pixel where `keep` is False replaced by the solution of: each such
    pixel equals the weighted mean of its neighbours inside the image (known or imputed), plus
    `noise` [missing, 3] where given. image [H, W, 3] float, keep [H, W] bool."""
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.linalg import spsolve
    except ImportError:
        raise OnnxcamError(
            "ROAD needs scipy: pip install 'onnxcam[evaluate]' (or leave road out of --metrics)"
        ) from None
    height, width = keep.shape
    flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
    known = keep.ravel()
    missing = np.flatnonzero(~known)
    variable = np.full(height * width, -1)
    variable[missing] = np.arange(len(missing))
    rows, columns, values = [], [], []
    right = np.zeros((len(missing), flat.shape[1]))
    diagonal = np.zeros(len(missing))
    y, x = np.divmod(missing, width)
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        which = np.flatnonzero(inside)
        neighbour = ny[inside] * width + nx[inside]
        diagonal[which] -= weight
        has_value = known[neighbour]
        right[which[has_value]] -= weight * flat[neighbour[has_value]]
        rows.append(which[~has_value])
        columns.append(variable[neighbour[~has_value]])
        values.append(np.full(int((~has_value).sum()), weight))
    rows.append(np.arange(len(missing)))
    columns.append(np.arange(len(missing)))
    values.append(diagonal)
    system = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                        shape=(len(missing), len(missing))).tocsc()
    solved = spsolve(system, right).reshape(len(missing), -1)
    filled = flat.copy()
    filled[missing] = solved + (0 if noise is None else noise)
    return filled.reshape(image.shape).astype(np.float32)


def keep_mask(saliency: np.ndarray, percentile: float) -> np.ndarray:
    """pytorch-grad-cam's RemoveMostRelevantFirst: keep the pixels below the map's percentile."""
    return saliency < np.float32(np.percentile(saliency, percentile))


def road_images(
    image: np.ndarray, saliency: np.ndarray, normalisation: Normalisation, rng: np.random.Generator | None,
    percentiles: tuple[int, ...] = PERCENTILES,
) -> np.ndarray:
    """[2P, H, W, 3]: the MoRF images at each percentile, then the LeRF ones. rng None: no noise
    (pytorch-grad-cam with noise 0); else N(0, 0.01) on the normalised input, i.e. 0.01 * std
    in raw pixels."""
    saliency = saliency.astype(np.float32)
    images = []
    for ordered in (saliency, np.float32(1) - saliency):
        for percentile in percentiles:
            keep = keep_mask(ordered, percentile)
            noise = None
            if rng is not None:
                noise = rng.standard_normal((int((~keep).sum()), 3)) * NOISE * np.asarray(normalisation.std)
            images.append(impute(image, keep, noise))
    return np.stack(images)


def road_scores(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, batch_size: int,
    normalisation: Normalisation = Normalisation(), rng: np.random.Generator | None = None,
    percentiles: tuple[int, ...] = PERCENTILES,
) -> dict[str, float]:
    """road-morf, road-lerf (mean over percentiles of probability after - before) and road
    ((lerf - morf) / 2) of one map, as pytorch-grad-cam's ROADMostRelevantFirstAverage,
    ROADLeastRelevantFirstAverage and ROADCombined compute them."""
    images = road_images(image, saliency, normalisation, rng, percentiles)
    classes = np.full(batch_size, class_index, dtype=np.int64)
    before = float(score(image[None].astype(np.float32), classes[:1])[0])
    after = np.concatenate([score(images[i:i + batch_size], classes[: len(images[i:i + batch_size])])
                            for i in range(0, len(images), batch_size)]).astype(np.float64)
    morf = float(np.mean(after[: len(percentiles)] - before))
    lerf = float(np.mean(after[len(percentiles):] - before))
    return {"road-morf": morf, "road-lerf": lerf, "road": (lerf - morf) / 2}
