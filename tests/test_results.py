"""runtime.results.record: the one plain dict of a result, the same keys for every front end."""

import json

import numpy as np
import pytest

from runtime import Explainer
from runtime.results import record
from tests.fake_model import blob_image

RED_BOX = (50, 10, 80, 30)


@pytest.fixture(scope="module")
def explainer(model_path):
    return Explainer(model_path, device="cpu")


def test_to_record_is_plain_json_ready_data(explainer):
    explanation = explainer.explain(blob_image(60, 90, RED_BOX), top_k=2, explain_top=2)
    document = explanation.to_record()
    assert json.loads(json.dumps(document)) == document  # plain data only
    assert set(document) == {"image", "predictions", "maps"} and document["image"] == "<array>"
    assert document["predictions"] == [
        {"index": p.index, "label": p.label, "probability": p.probability} for p in explanation.predictions
    ]
    assert [set(entry) for entry in document["maps"]] == [{"method", "class_index", "label", "rank", "peak"}] * 2
    for entry, class_map in zip(document["maps"], explanation.maps, strict=True):
        assert entry == {"method": "gradcam", "class_index": class_map.class_index, "label": class_map.label,
                         "rank": class_map.rank, "peak": list(class_map.peak)}
    assert [entry["rank"] for entry in document["maps"]] == [1, 2]


def test_several_methods_one_record_with_the_cam_and_the_weights(explainer):
    per_method = next(explainer.explain_methods([blob_image(60, 90, RED_BOX)], ["gradcam", "eigencam"]))
    explanations = [outcome.explanation for outcome in per_method]
    document = record(explanations, explainer.card, cam=True)
    assert [entry["method"] for entry in document["maps"]] == ["gradcam", "eigencam"]
    assert document["weights"] == {"source": "tests/fake_model.py", "random": False}
    cam = explanations[1].maps[0].cam
    assert np.array_equal(np.array(document["maps"][1]["cam"], dtype=np.float32), cam)
    assert json.loads(json.dumps(document)) == document
