"""In-process tests of the HTTP app: every endpoint, every error status, batching."""

import asyncio
import base64
import hashlib
import io
import os
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from runtime import Explainer
from runtime.serve.app import Service, create_app
from runtime.serve.limits import Limits
from tests.fake_model import LABELS, write_fake_model
from tests.serve_helpers import png_bytes, red_blob_png


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve") / "fake.onnx")


@pytest.fixture(scope="module")
def explainer(model_path):
    return Explainer(model_path, device="cpu")


def client_for(explainer: Explainer, **limits) -> TestClient:
    return TestClient(create_app(Service(explainer, Limits(**limits))), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(explainer):
    return client_for(explainer)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]


def assert_matches(document: dict, expected, method: str = "gradcam") -> None:
    """A response's predictions and maps equal an in-process Explanation's."""
    assert [(p["index"], p["label"]) for p in document["predictions"]] == [(p.index, p.label) for p in expected.predictions]
    np.testing.assert_allclose([p["probability"] for p in document["predictions"]], [p.probability for p in expected.predictions], atol=1e-6)
    maps = [m for m in document["maps"] if m["method"] == method]
    assert [m["class_index"] for m in maps] == [m.class_index for m in expected.maps]
    for got, want in zip(maps, expected.maps):
        assert tuple(got["peak"]) == want.peak
        np.testing.assert_allclose(np.array(got["cam"]), want.cam, atol=1e-6)


def test_health_ready_and_model_card(client, explainer):
    assert client.get("/healthz").json() == {"status": "alive", "pid": os.getpid()}
    assert client.get("/readyz").status_code == 200
    card = client.get("/v1/model").json()
    assert card["classes"] == LABELS
    assert card["input_size"] == [32, 32]
    assert card["weights"]["sha256"] == "0" * 64
    assert card["random_weights"] is False
    assert card["layers"] == ["average_pool"]


def test_not_ready_without_a_service():
    client = TestClient(create_app(None))
    assert client.get("/healthz").status_code == 200
    assert_error(client.get("/readyz"), 503, "not_ready")


def test_explain_raw_body_equals_the_explainer(client, explainer):
    image = red_blob_png()
    response = client.post("/v1/explain?top_k=2&explain_top=2", content=image)
    assert response.status_code == 200, response.text
    document = response.json()
    expected = explainer.explain(image, top_k=2, explain_top=2)
    assert len(document["predictions"]) == len(document["maps"]) == 2
    assert document["predictions"][0]["label"] == "red"
    assert_matches(document, expected)
    assert document["model"] == {
        "file_sha256": hashlib.sha256(open(explainer.model_path, "rb").read()).hexdigest(),
        "weights_sha256": "0" * 64,
        "sha256": "0" * 64,
        "layer": "average_pool",
        "weights": explainer.card.weights,
    }
    assert "heatmap_png" not in document["maps"][0] and "overlay_png" not in document["maps"][0]


def test_explain_multipart_classes_methods_and_images(client, explainer):
    image = red_blob_png()
    response = client.post(
        "/v1/explain?class=2&class=1&method=gradcam,layercam&include=heatmap,overlay",
        files={"file": ("photo.png", image, "image/png")},
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert [(m["method"], m["class_index"]) for m in document["maps"]] == [
        ("gradcam", 2), ("gradcam", 1), ("layercam", 2), ("layercam", 1)
    ]
    assert_matches(document, explainer.explain(image, class_index=[2, 1]))
    assert_matches(document, explainer.with_method("layercam").explain(image, class_index=[2, 1]), "layercam")
    first = document["maps"][0]
    heat = Image.open(io.BytesIO(base64.b64decode(first["heatmap_png"])))
    assert heat.mode == "L" and heat.size == (48, 40)
    expected = explainer.explain(image, class_index=[2, 1])
    np.testing.assert_allclose(np.asarray(heat) / 255, expected.maps[0].heatmap, atol=1 / 255)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["overlay_png"]))))
    np.testing.assert_array_equal(overlay, expected.overlays[0])


def test_smoothing_settings_are_applied(client, model_path):
    image = red_blob_png()
    document = client.post("/v1/explain?method=eigencam&eigen_smooth=true&aug_smooth=1", content=image).json()
    smooth = Explainer(model_path, device="cpu", method="eigencam", eigen_smooth=True, aug_smooth=True)
    assert_matches(document, smooth.explain(image), "eigencam")


def test_accept_png_returns_the_first_overlay(client, explainer):
    image = red_blob_png()
    response = client.post("/v1/explain", content=image, headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    expected = explainer.explain(image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected.overlays[0])


@pytest.mark.parametrize(
    "query, body, code",
    [
        ("", b"not an image at all", "bad_image"),
        ("", b"", "bad_image"),
        ("", red_blob_png()[:60], "bad_image"),
        ("?method=nosuchcam", red_blob_png(), "unknown_method"),
        ("?class=4", red_blob_png(), "class_out_of_range"),
        ("?class=-1", red_blob_png(), "class_out_of_range"),
        ("?top_k=0", red_blob_png(), "bad_top_k"),
        ("?top_k=two", red_blob_png(), "bad_parameter"),
        ("?explain_top=0", red_blob_png(), "bad_explain_top"),
        ("?explain_top=5", red_blob_png(), "bad_explain_top"),
        ("?explain_top=2&class=1", red_blob_png(), "bad_parameter"),
        ("?aug_smooth=maybe", red_blob_png(), "bad_parameter"),
        ("?include=everything", red_blob_png(), "bad_include"),
    ],
)
def test_bad_requests_are_422(client, query, body, code):
    assert_error(client.post(f"/v1/explain{query}", content=body), 422, code)


def test_multipart_without_file_is_422(client):
    assert_error(client.post("/v1/explain", files={"image": ("a.png", red_blob_png(), "image/png")}), 422, "missing_file")


def test_server_side_paths_are_never_read(client, model_path):
    assert_error(client.post("/v1/explain", content=str(model_path).encode()), 422, "bad_image")


def test_body_over_the_limit_is_413(explainer):
    client = client_for(explainer, max_body_mb=0.001)  # 1048 bytes
    assert_error(client.post("/v1/explain", content=b"x" * 2000), 413, "body_too_large")

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        for _ in range(10):
            yield b"x" * 500

    assert_error(client.post("/v1/explain", content=chunks()), 413, "body_too_large")


def test_too_many_pixels_is_413(explainer):
    assert_error(client_for(explainer, max_pixels=100).post("/v1/explain", content=red_blob_png()), 413, "too_many_pixels")


def test_api_key(explainer):
    client = client_for(explainer, api_key="s3cret")
    assert_error(client.post("/v1/explain", content=red_blob_png()), 401, "unauthorized")
    assert_error(client.post("/v1/explain", content=red_blob_png(), headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert_error(client.get("/v1/model"), 401, "unauthorized")
    assert client.post("/v1/explain", content=red_blob_png(), headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/explain"), 405, "method_not_allowed")


def test_page_is_one_offline_file(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<script" in response.text and "http://" not in response.text and "https://" not in response.text


class GatedExplainer(Explainer):
    """An Explainer whose runs wait until `gate` is set: to hold the batch worker busy."""

    gate: threading.Event
    entered: threading.Event

    def explain_targets(self, *args, **kwargs):
        self.entered.set()
        self.gate.wait(timeout=10)
        return super().explain_targets(*args, **kwargs)


async def post_all(app, bodies_and_queries):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await asyncio.gather(*(client.post(f"/v1/explain{query}", content=body) for body, query in bodies_and_queries))


def test_queue_full_is_503_and_timeout_is_504(model_path):
    gated = GatedExplainer(model_path, device="cpu")
    gated.gate, gated.entered = threading.Event(), threading.Event()
    gated.gate.set()  # let the warm-up through
    service = Service(gated, Limits(max_batch_size=1, max_wait_ms=0, max_queue=1, timeout_s=5))
    gated.gate.clear()
    gated.entered.clear()
    image = red_blob_png()
    app = create_app(service)

    async def scenario():
        running = asyncio.ensure_future(post_all(app, [(image, "")]))
        for _ in range(1000):  # the first request holds the worker (at most 10 s)
            if gated.entered.is_set():
                break
            await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(post_all(app, [(image, "")]))
        for _ in range(1000):  # the second waits in the queue
            if service.lanes.depth >= 1:
                break
            await asyncio.sleep(0.01)
        refused = await post_all(app, [(image, "")] * 2)
        gated.gate.set()
        return (await running) + (await queued) + refused

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200, 200, 503, 503]
    for response in responses[2:]:
        assert_error(response, 503, "queue_full")
        assert response.headers["retry-after"] == "1"
    slow = Service(gated, Limits(timeout_s=0.2))
    gated.gate.clear()
    response = asyncio.run(post_all(create_app(slow), [(image, "")]))[0]
    gated.gate.set()
    assert_error(response, 504, "timeout")


def test_concurrent_requests_share_runs_and_get_their_own_settings(explainer):
    service = Service(explainer, Limits(max_batch_size=8, max_wait_ms=200))
    images = [png_bytes(np.full((24 + i, 30, 3), (40 * i, 255 - 30 * i, 100), dtype=np.uint8)) for i in range(6)]
    queries = ["?top_k=1", "?top_k=2&explain_top=2", "?class=3", "?top_k=1", "?method=hirescam", "?top_k=2"]
    responses = asyncio.run(post_all(create_app(service), list(zip(images, queries))))
    for response, image, query in zip(responses, images, queries):
        assert response.status_code == 200, response.text
        if "class" in query:
            expected = explainer.explain(image, class_index=3)
        elif "hirescam" in query:
            assert_matches(response.json(), explainer.with_method("hirescam").explain(image), "hirescam")
            continue
        else:
            expected = explainer.explain(image, top_k=int(query[7]), explain_top=2 if "explain_top=2" in query else 1)
        assert_matches(response.json(), expected)
    metrics = TestClient(create_app(service)).get("/metrics").text
    assert "onnxcam_batch_size_count 1.0" in metrics  # six requests, one gathered batch
    assert "onnxcam_batch_size_sum 6.0" in metrics
    assert 'onnxcam_requests_total{path="/v1/explain",status="200"} 6.0' in metrics
    assert "onnxcam_images_total 6.0" in metrics
    assert "onnxcam_queue_depth 0.0" in metrics
    assert 'onnxcam_request_seconds_count{path="/v1/explain"} 6.0' in metrics
