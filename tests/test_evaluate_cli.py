"""python -m runtime.evaluate's command line on the fake model: --boxes matched by path then by
file name, malformed boxes and --steps refused in one line (issue #24, items 16-18), the report's
header and footer, the progress bar and the estimate (issue #28, item 4)."""

import json
from pathlib import Path

import cv2
import pytest

from runtime.evaluate.__main__ import main
from tests.fake_model import INPUT_SIZE, blob_image, write_fake_model

FAST = ["--methods", "gradcam", "--metrics", "deletion,insertion,pointing-game", "--steps", "4", "--class", "0"]


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> str:
    return str(write_fake_model(tmp_path_factory.mktemp("fake") / "fake.onnx"))


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    folder = tmp_path / "dir"
    folder.mkdir()
    paths = []
    for name in ("one.png", "two.png"):
        image = blob_image(*INPUT_SIZE, (4, 8, 20, 16), colour=(250, 40, 10))
        cv2.imwrite(str(folder / name), image[..., ::-1])
        paths.append(str(folder / name))
    return paths


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_boxes_are_matched_by_file_name_and_images_without_a_box_are_named(fake, images, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"one.png": {"0": [[0, 0, 31, 31]]}}))  # the path given is dir/one.png
    out = tmp_path / "out"
    code, err = run(capsys, *images, "--model", fake, *FAST, "--boxes", boxes, "--out", out)
    assert code == 0, err
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"]["gradcam"]["pointing-game"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 1}
    assert data["unboxed"] == [images[1]]
    assert [line for line in err if "no box for 1 of 2 images" in line and images[1] in line]
    assert images[1] in (out / "report.md").read_text()


def test_a_file_name_that_two_entries_share_is_not_guessed(fake, images, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a/one.png": {"0": [[0, 0, 31, 31]]}, "b/one.png": {"0": [[0, 0, 1, 1]]},
                                 images[1]: {"0": [[0, 0, 31, 31]]}}))
    out = tmp_path / "out"
    code, err = run(capsys, *images, "--model", fake, *FAST, "--boxes", boxes, "--out", out)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["unboxed"] == [images[0]]


@pytest.mark.parametrize("entry", [[[1, 2, 3]], "box", 5, [[3, 0, 1, 1]], [[0, 0, 1, True]], [[0, 0, 1, None]]])
def test_a_malformed_box_entry_is_one_line_naming_it(fake, images, tmp_path, capsys, entry):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({images[0]: {"0": entry}}))  # keyed by the path given: used, not ignored
    out = tmp_path / "out"
    code, err = run(capsys, *images, "--model", fake, *FAST, "--boxes", boxes, "--out", out)
    assert code == 2 and len(err) == 1 and str(boxes) in err[0] and repr(images[0]) in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("entry", [{"one.png": 5}, {"one.png": {"cat": [[0, 0, 1, 1]]}}, [[0, 0, 1, 1]]])
def test_a_malformed_image_entry_is_one_line(fake, images, tmp_path, capsys, entry):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(entry))
    code, err = run(capsys, *images, "--model", fake, *FAST, "--boxes", boxes, "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1 and str(boxes) in err[0], err


@pytest.mark.parametrize("steps", ["1025", "1000000000", "0", "-3"])
def test_steps_outside_one_to_the_input_pixels_are_refused(fake, images, tmp_path, capsys, steps):
    out = tmp_path / "out"
    code, err = run(capsys, *images, "--model", fake, "--methods", "gradcam", "--steps", steps, "--out", out)
    assert code == 2 and len(err) == 1 and f"steps {steps}" in err[0], err
    assert not out.exists()


def test_steps_written_1e9_is_refused_by_the_parser(fake, images, tmp_path, capsys):
    code, err = run(capsys, *images, "--model", fake, "--steps", "1e9", "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1 and "1e9" in err[0], err


def test_the_shared_flags_and_their_aliases(fake, images, tmp_path, capsys):
    """--output for --out, --method for --methods, --explain-top for the old --top-k."""
    out = tmp_path / "out"
    code, err = run(capsys, images[0], "--model", fake, "--method", "gradcam", "--explain-top", "2", "--metrics",
                    "deletion", "--steps", "2", "--output", out)
    assert code == 0, err
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"]["gradcam"]["deletion"]["n"] == 2  # one image, two classes
    assert len(data["values"]["random-cam"]["deletion"]) == 2
    assert data["run"]["methods"] == ["gradcam"]


def test_steps_equal_to_the_pixels_are_one_pixel_a_step(fake, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, images[0], "--model", fake, "--methods", "gradcam", "--metrics", "deletion",
                    "--steps", str(32 * 32), "--out", out)
    assert code == 0, err
    assert len(json.loads((out / "metrics.json").read_text())["curves"]["gradcam"]["deletion"]) == 32 * 32 + 1


def test_the_report_names_the_run_and_explains_only_the_metrics_run(fake, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, *images, "--model", fake, *FAST, "--seed", "7", "--out", out)
    assert code == 0, err
    text = (out / "report.md").read_text()
    sha = __import__("hashlib").sha256(Path(fake).read_bytes()).hexdigest()
    expected_texts = (fake, sha, "`average_pool`", "steps 4", "seed 7", "one.png", "two.png", "**deletion**",
                      "**insertion**")
    for expected in expected_texts:
        assert expected in text, expected
    for absent in ("average-drop", "road", "pointing", "Warning"):  # not run (no boxes: no pointing game)
        assert absent not in text, absent
    assert [line for line in err if "forward passes" in line]  # the estimate, before the run


def test_a_random_weights_model_is_warned_about_at_the_top(tmp_path, images, capsys):
    model = write_fake_model(tmp_path / "random.onnx")
    import onnx

    proto = onnx.load(model)
    for entry in proto.metadata_props:
        if entry.key == "onnxcam.weights":
            entry.value = json.dumps({"source": "none (random)", "random": True})
    onnx.save(proto, model)
    out = tmp_path / "out"
    code, err = run(capsys, images[0], "--model", model, *FAST, "--out", out)
    assert code == 0, err
    lines = (out / "report.md").read_text().splitlines()
    assert "Warning" in lines[2] and "random weights" in lines[2]
    assert [line for line in err if "random weights" in line]


def test_the_progress_bar_counts_the_images_evaluated(fake, images, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    code, err = run(capsys, *images, bad, images[0], images[1], "--model", fake, *FAST, "--out", out)
    assert code == 1
    bars = [line for line in "\n".join(err).replace("\r", "\n").splitlines() if "image" in line and "|" in line]
    assert bars and "4/4" in bars[-1], bars  # 5 given, 1 skipped


@pytest.mark.parametrize(("signal_", "code", "said"), [(2, 130, "interrupted"), (15, 143, "terminated")])
def test_ctrl_c_and_sigterm_stop_in_one_line_with_nothing_written(fake, images, tmp_path, signal_, code, said):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.evaluate", *images * 40, "--model", fake, "--metrics", "deletion,insertion",
         "--steps", "1000", "--out", str(out)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert "forward passes" in process.stderr.readline()  # the estimate: the run has started
    time.sleep(1)
    process.send_signal(signal_)
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]
    assert process.returncode == code and lines == [f"onnxcam-evaluate: {said}"], err
    assert not out.exists()
