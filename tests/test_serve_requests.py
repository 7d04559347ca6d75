"""In-process tests of what a request may ask and how it is refused (issue 23, items 1, 3, 4, 6, 7, 9;
issue 25: one route table)."""

import asyncio
import struct
import zlib

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from runtime import Explainer
from runtime.serve.app import PATHS, ROUTES, Service, create_app, wants_png
from runtime.serve.batching import Job, Settings, run_group
from runtime.serve.limits import Limits
from runtime.targets import Targets
from tests.fake_model import write_fake_model
from tests.serve_helpers import png_bytes, red_blob_png


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve_requests") / "fake.onnx")


class CountingExplainer(Explainer):
    """Counts model work started (explain_targets calls), to show that a refusal came before any."""

    calls = 0

    def explain_targets(self, *args, **kwargs):
        type(self).calls += 1
        return super().explain_targets(*args, **kwargs)


@pytest.fixture(scope="module")
def explainer(model_path):
    return CountingExplainer(model_path, device="cpu")


def client_for(explainer: Explainer, **limits) -> TestClient:
    return TestClient(create_app(Service(explainer, Limits(**limits))), raise_server_exceptions=False)


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"]
    for word in words:
        assert word in error["message"], error["message"]


def test_maps_over_the_limit_are_refused_before_any_work(explainer):
    client = client_for(explainer, max_maps=3)
    before = CountingExplainer.calls
    assert_error(client.post("/v1/explain?explain_top=4", content=red_blob_png()), 422, "too_many_maps", "4 maps", "3", "--max-maps")
    assert_error(
        client.post("/v1/explain?method=gradcam,layercam&class=0,1", content=red_blob_png()), 422, "too_many_maps", "--max-maps"
    )
    assert CountingExplainer.calls == before
    assert client.post("/v1/explain?explain_top=3", content=red_blob_png()).status_code == 200


def test_images_asked_back_over_the_output_budget_are_refused_before_any_work(explainer):
    client = client_for(explainer, max_output_mpx=0.004)  # 4000 pixels; the image is 48 x 40 = 1920
    before = CountingExplainer.calls
    assert_error(
        client.post("/v1/explain?explain_top=2&include=overlay,heatmap", content=red_blob_png()),
        413, "output_too_large", "7680", "--max-output-mpx",
    )
    assert CountingExplainer.calls == before
    assert client.post("/v1/explain?explain_top=2&include=overlay", content=red_blob_png()).status_code == 200
    assert client.post("/v1/explain?explain_top=4", content=red_blob_png()).status_code == 200  # no images back


def test_pixels_are_checked_from_the_header_before_any_work(explainer):
    client = client_for(explainer, max_pixels=1000)
    before = CountingExplainer.calls
    assert_error(client.post("/v1/explain", content=red_blob_png()), 413, "too_many_pixels", "1920", "--max-pixels")
    assert CountingExplainer.calls == before


def test_the_card_tells_the_limits(explainer):
    card = client_for(explainer, max_maps=5).get("/v1/model").json()
    assert card["limits"]["max_maps"] == 5 and card["limits"]["max_body_bytes"] == 20 * 1024 * 1024
    assert len(card["file_sha256"]) == 64


def test_work_stops_at_the_next_model_run_once_its_requests_are_gone(model_path):
    """Score-CAM: one masked run per channel; the job is marked gone during the second run."""
    runs, stop_after = [], [2]
    job = Job(red_blob_png(), Settings(Targets(top_k=1, methods=("scorecam",)), False, False), asyncio.Future(loop=asyncio.new_event_loop()))
    explainer = Explainer(model_path, device="cpu", batch_size=1)
    session_run = explainer._session.run

    def counted(*args, **kwargs):
        runs.append(1)
        if len(runs) == stop_after[0]:
            job.gone.set()
        return session_run(*args, **kwargs)

    explainer._session = type("Counted", (), {"run": staticmethod(counted), "get_providers": lambda self: ["CPU"]})()
    assert run_group(explainer, [job]) is None
    assert len(runs) == 2  # the plain run and one masked run of three: then it stopped
    job.gone.clear()
    runs.clear()
    stop_after[0] = 0
    assert run_group(explainer, [job]) is not None and len(runs) == 1 + 3  # untouched, all runs


def test_a_client_gone_mid_body_is_499_without_a_traceback(explainer, capsys):
    service = Service(explainer, Limits())
    app = create_app(service)
    messages = iter([
        {"type": "http.request", "body": b"\x89PNG" + b"x" * 100, "more_body": True},
        {"type": "http.disconnect"},
    ])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/explain", "raw_path": b"/v1/explain", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"100000")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))  # raised ClientDisconnect before
    metrics = TestClient(app).get("/metrics").text
    assert 'onnxcam_requests_total{path="/v1/explain",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "content_type, body, code",
    [
        ("multipart/form-data", b"--x\r\n", "bad_multipart"),  # no boundary
        ("multipart/form-data; boundary=x", b"".join(b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(20)) + b"--x--\r\n", "bad_multipart"),
        ("multipart/form-data; boundary=x", b"".join(b'--x\r\nContent-Disposition: form-data; name="file"; filename="a%d.png"\r\n\r\nv\r\n' % i for i in range(3)) + b"--x--\r\n", "bad_multipart"),
        ("text/plain", red_blob_png(), "unsupported_media_type"),
        ("application/x-www-form-urlencoded", b"a=b", "unsupported_media_type"),
    ],
)
def test_bad_bodies_get_the_json_error_shape(explainer, content_type, body, code):
    response = client_for(explainer).post("/v1/explain", content=body, headers={"Content-Type": content_type})
    assert_error(response, 415 if code == "unsupported_media_type" else 400, code)


def test_the_multipart_type_is_matched_whatever_its_case(explainer):
    request = httpx.Request("POST", "http://x/", files={"file": ("a.png", red_blob_png(), "image/png")})
    body = request.read()
    content_type = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    response = client_for(explainer).post("/v1/explain", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text


def test_keys_only_as_x_api_key_or_bearer_and_metrics_need_it(explainer):
    client = client_for(explainer, api_key="s3cret")
    assert_error(client.get("/v1/model", headers={"Authorization": "s3cret"}), 401, "unauthorized")
    assert_error(client.get("/v1/model", headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
    assert client.get("/v1/model", headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert_error(client.get("/metrics"), 401, "unauthorized")
    assert client.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


def test_other_hosts_and_origins_are_refused_before_any_work(explainer):
    client = client_for(explainer, allowed_hosts=("127.0.0.1", "localhost"))
    assert client.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert_error(client.get("/healthz", headers={"Host": "attacker.example"}), 400, "bad_host")
    before = CountingExplainer.calls
    cross = {"Host": "127.0.0.1:8000", "Origin": "http://attacker.example"}
    assert_error(client.post("/v1/explain", content=red_blob_png(), headers=cross), 403, "cross_origin", "--allow-origin")
    assert CountingExplainer.calls == before
    same = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
    assert client.post("/v1/explain", content=red_blob_png(), headers=same).status_code == 200

    allowing = client_for(explainer, allow_origins=("https://app.example",))
    preflight = allowing.options(
        "/v1/explain", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    response = allowing.post("/v1/explain", content=red_blob_png(), headers={"Origin": "https://app.example"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize(
    "accept, png",
    [
        ("image/png", True),
        ("image/png;q=0", False),
        ("image/png; q=0.0, application/json", False),
        ("application/json;q=0.5, image/png", True),
        ("image/png, application/json", False),
        ("image/*", True),
        ("*/*", False),
        ("", False),
        ("image/png;q=bogus", False),
    ],
)
def test_accept_is_negotiated(accept, png):
    assert wants_png(accept) is png


def test_q0_png_gets_json(explainer):
    response = client_for(explainer).post("/v1/explain", content=red_blob_png(), headers={"Accept": "image/png;q=0"})
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("query", ["top_k=1_0", "top_k=+2", "top_k= 2", "class=٣", "explain_top=0x2"])
def test_integers_are_digits_only(explainer, query):
    assert_error(client_for(explainer).post(f"/v1/explain?{query}", content=red_blob_png()), 422, "bad_parameter")


def test_one_route_table_feeds_the_app_and_the_metrics(explainer):
    client = client_for(explainer)
    for route in ROUTES:
        method = sorted(route.methods - {"HEAD"})[0]
        if method == "GET":
            client.get(route.path)
    client.get("/not/a/route")
    metrics = client.get("/metrics").text
    for route in ROUTES:
        if "GET" in route.methods:
            assert f'onnxcam_requests_total{{path="{route.path}",status="200"}}' in metrics
    assert 'path="other",status="404"' in metrics
    assert PATHS == {route.path for route in ROUTES}


def test_big_images_are_drawn_in_the_render_lane(explainer):
    """A 1200 x 1000 image (over the light size): overlays come back whole, one map at a time."""
    image = png_bytes(np.zeros((1000, 1200, 3), np.uint8))
    service = Service(explainer, Limits())
    used = []
    original = service.render_lane.submit
    service.render_lane.submit = lambda *a, **k: used.append(1) or original(*a, **k)
    response = TestClient(create_app(service)).post("/v1/explain?explain_top=2&include=overlay", content=image)
    assert response.status_code == 200
    maps = response.json()["maps"]
    assert len(maps) == 2 and all(len(m["overlay_png"]) > 100 for m in maps)
    assert len(used) == 2


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none (a decompression bomb's head)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", b"")


@pytest.mark.parametrize("side", [5000, 20000])  # 25 Mpx: our limit from the header; 400 Mpx: Pillow's bomb check
def test_a_declared_huge_image_is_413_before_any_work(explainer, side):
    before = CountingExplainer.calls
    assert_error(client_for(explainer).post("/v1/explain", content=png_header(side, side)), 413, "too_many_pixels", "--max-pixels")
    assert CountingExplainer.calls == before
