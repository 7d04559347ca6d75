"""The command line: files out, JSON and table reports, one-line errors, exit codes, no TensorFlow."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
from PIL import Image

from runtime import Explainer, render
from runtime.cli import main
from tests.fake_model import blob_image, write_fake_model, write_identity_model

REPO = Path(__file__).resolve().parents[1]
RED_BOX = (50, 10, 80, 30)
BLOCK_TENSORFLOW = """
import importlib.abc, runpy, sys

BLOCKED = {"tensorflow", "keras", "tf_keras", "tf2onnx", "onnx"}

class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the runtime must not need it")

sys.meta_path.insert(0, BlockTensorFlow())
try:
    import onnx
except ImportError:
    pass
else:
    sys.exit("the import blocker does not work")
runpy.run_module("runtime", run_name="__main__", alter_sys=True)
"""


def run_cli(*args, blocker: bool = False) -> subprocess.CompletedProcess:
    start = [sys.executable, "-c", BLOCK_TENSORFLOW] if blocker else [sys.executable, "-m", "runtime"]
    return subprocess.run([*start, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)


def save(path: Path, image: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **options)
    return path


def error_lines(stderr: str) -> list[str]:
    """stderr lines other than the provider line, which names the model."""
    return [line for line in stderr.splitlines() if "CPUExecutionProvider" not in line]


def test_json_reports_one_object_per_image_and_writes_its_files(model_path, tmp_path):
    folder = tmp_path / "photos"
    red = save(folder / "red.png", blob_image(60, 90, RED_BOX))
    blue = save(folder / "deeper" / "blue.jpg", blob_image(48, 48, (4, 30, 20, 44), (0, 0, 255)), quality=95)
    cat = save(tmp_path / "cat.jpg", skimage.data.chelsea())
    (folder / "readme.txt").write_text("not an image, and not picked up from a folder")
    out = tmp_path / "out"
    result = run_cli(
        folder, cat, "--model", model_path, "--out", out, "--json", "--top-k", "2", "--explain-top", "2", "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"onnxcam: {model_path}: fake, layer average_pool, gradcam on CPUExecutionProvider"
    ]
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in reports] == [str(blue), str(red), str(cat)]  # folders sorted, then as given
    sizes = {str(red): (60, 90), str(blue): (48, 48), str(cat): (300, 451)}
    for report in reports:
        assert set(report) == {"image", "predictions", "maps", "weights"}
        assert report["weights"] == {"source": "tests/fake_model.py", "random": False}
        assert len(report["predictions"]) == 2 and len(report["maps"]) == 2
        for prediction in report["predictions"]:
            assert (
                set(prediction) == {"index", "label", "probability"} and 0 <= prediction["probability"] <= 1
            )
        stem = Path(report["image"]).stem
        for rank, entry in enumerate(report["maps"], start=1):
            assert set(entry) == {"method", "class_index", "label", "rank", "overlay", "heatmap", "peak"}
            assert entry["method"] == "gradcam" and entry["rank"] == rank
            label = entry["label"].replace(" ", "_")
            assert entry["overlay"] == str(out / f"{stem}_top{rank}_{label}_overlay.png")
            assert entry["heatmap"] == str(out / f"{stem}_top{rank}_{label}_heatmap.npy")
            heat = np.load(entry["heatmap"])
            assert heat.shape == sizes[report["image"]] and heat.dtype == np.float32 and heat.max() <= 1
            assert cv2.imread(entry["overlay"]).shape == (*sizes[report["image"]], 3)
            assert entry["peak"] == list(np.unravel_index(np.argmax(heat), heat.shape)[::-1])
    red_report = reports[1]
    assert red_report["predictions"][0]["label"] == "red" and red_report["maps"][0]["label"] == "red"
    x, y = red_report["maps"][0]["peak"]
    assert RED_BOX[0] <= x < RED_BOX[2] and RED_BOX[1] <= y < RED_BOX[3]
    assert reports[0]["maps"][0]["label"] == "blue"
    assert len(os.listdir(out)) == 3 * 2 * 2  # nothing else, no temporary files


def test_each_bad_image_gets_one_line_and_the_others_are_still_written(model_path, tmp_path):
    good = save(tmp_path / "good.png", blob_image(60, 90, RED_BOX))
    also_good = save(tmp_path / "also_good.png", blob_image(30, 30, (0, 0, 10, 10), (0, 255, 0)))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello, I am not a JPEG")
    truncated = tmp_path / "truncated.jpg"
    save(truncated, np.random.default_rng(0).integers(0, 256, (70, 70, 3), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    huge = save(tmp_path / "huge.png", np.zeros((100, 100, 3), dtype=np.uint8))
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    result = run_cli(
        good,
        missing,
        empty,
        truncated,
        text,
        huge,
        also_good,
        "--model",
        model_path,
        "--out",
        out,
        "--max-pixels",
        6000,
        "--device",
        "cpu",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    expected = [
        f"onnxcam: {missing}: file not found",
        f"onnxcam: {empty}: empty input (0 bytes)",
        f"onnxcam: {truncated}: cannot decode image: OSError: image file is truncated",
        f"onnxcam: {text}: not an image (unrecognised file format)",
        f"onnxcam: {huge}: image is 100x100 = 10000 pixels, over the limit of 6000 (max_pixels)",
    ]
    lines = error_lines(result.stderr)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start)
    written = sorted(os.listdir(out))
    assert {name.split("_")[0] for name in written} == {"good", "also"}
    assert len(written) == 2 * 1 * 2  # two images, the predicted class's overlay and heatmap


def test_table_output(model_path, tmp_path):
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    result = run_cli(image, "--model", model_path, "--out", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(image)
    assert re.fullmatch(r"\s+0\s+red\s+\d+\.\d\d%", lines[1])
    assert len(lines) == 1 + 3 + 1  # top-3, one map by default
    assert re.fullmatch(r"  map\s+0  red\s+gradcam  rank 1  peak \(x=\d+, y=\d+\)  (.*)", lines[4])
    assert lines[4].endswith(str(tmp_path / "out" / "red_top1_red_overlay.png"))
    assert lines[4].index(" 0  red") == lines[1].index(" 0  red")  # the class index and label line up


def test_table_columns_line_up_with_several_methods_and_a_given_class(model_path, tmp_path, capsys):
    image = save(tmp_path / "red.png", blob_image(600, 900, RED_BOX))  # peaks of different widths
    out = tmp_path / "out"
    arguments = [str(image), "--model", str(model_path), "--out", str(out), "--method", "gradcam,gradcam++,eigencam",
                 "--class", "0", "3"]
    assert main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    maps = [line for line in lines if line.startswith("  map ")]
    assert len(maps) == 3 * 2
    overlays = [line.rsplit("  ", 1)[1] for line in maps]
    assert all(os.path.isfile(path) for path in overlays)
    assert len({line.index(path) for line, path in zip(maps, overlays)}) == 1  # files in one column
    assert len({line.index(" rank ") for line in maps}) == 1 and len({line.index(" peak ") for line in maps}) == 1
    assert "#" not in "".join(maps)  # "map #7" read as a class index; it is "rank 7" now
    ranks = {int(line.split(" rank ")[1].split()[0]) for line in maps}
    assert ranks <= {1, 2, 3, 4} and len(ranks) == 2  # classes 0 and 3 rank differently


def test_runs_end_to_end_without_tensorflow_keras_tf2onnx_or_onnx(model_path, tmp_path):
    image = save(tmp_path / "red.jpg", blob_image(60, 90, RED_BOX))
    out = tmp_path / "out"
    result = run_cli(image, "--model", model_path, "--out", out, "--json", "--device", "cpu", blocker=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(Path(entry["overlay"]).is_file() for entry in report["maps"])


def test_a_corrupt_model_stops_the_process_with_one_line(tmp_path):
    model = tmp_path / "corrupt.onnx"
    model.write_bytes(b"\x00\x01 not a protobuf" * 50)
    result = run_cli(tmp_path / "any.jpg", "--model", model, "--out", tmp_path / "out")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(
        f"onnxcam: {model}: cannot load model"
    )


def invalid_model(tmp_path: Path) -> Path:
    return write_identity_model(tmp_path / "plain.onnx")


def corrupt_model(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"garbage")
    return path


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (lambda tmp, model: ["--model", invalid_model(tmp)], "plain.onnx: not an onnxcam model"),
        (lambda tmp, model: ["--model", corrupt_model(tmp)], "corrupt.onnx: cannot load model"),
        (lambda tmp, model: ["--model", tmp / "absent.onnx"], "absent.onnx: model file not found"),
        (lambda tmp, model: ["--model", model, "--class", "7"], "class index 7: out of range"),
        (lambda tmp, model: ["--model", model, "--top-k", "9"], "top_k 9: must be between 1"),
        (lambda tmp, model: ["--model", model, "--explain-top", "0"], "explain_top 0: must be at least 1"),
        (
            lambda tmp, model: ["--model", model, "--explain-top", "2", "--class", "1"],
            "arguments: argument --class: not allowed with argument --explain-top",
        ),
        (lambda tmp, model: ["--model", model, "--batch-size", "0"], "batch size 0: must be at least 1"),
        (lambda tmp, model: ["--model", model, "--max-channels", "0"], "max channels 0: must be at least 1"),
        (
            lambda tmp, model: ["--model", model, "--method", "gradcam,magic"],
            "arguments: argument --method/--methods: method 'magic': unknown (use gradcam, gradcam++,",
        ),
        (
            lambda tmp, model: ["--model", model, "--method", "eigencam,eigencam"],
            "arguments: argument --method/--methods: a method given twice in 'eigencam,eigencam'",
        ),
        (lambda tmp, model: ["--model", model, "--class", "two"], "arguments: argument --class: invalid int"),
        (
            lambda tmp, model: ["--model", model, "--device", "tpu"],
            "arguments: argument --device: invalid choice",
        ),
        (lambda tmp, model: [], "arguments: the following arguments are required: --model"),
    ],
)
def test_a_run_that_cannot_start_exits_2_with_one_line(model_path, tmp_path, capsys, arguments, problem):
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    out = tmp_path / "out"
    code = main([str(image), "--out", str(out), *map(str, arguments(tmp_path, model_path))])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("onnxcam: ")
    assert problem in captured.err
    assert not out.exists()


def test_cuda_where_onnxruntime_has_none_exits_2(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    assert (
        main([str(image), "--model", str(model_path), "--out", str(tmp_path / "out"), "--device", "cuda"])
        == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        "onnxcam: device cuda: onnxruntime offers no CUDAExecutionProvider (only CPUExecutionProvider); "
        "install onnxruntime-gpu or use device cpu"
    ]


def test_chosen_classes_and_same_named_files(model_path, tmp_path, capsys):
    first = save(tmp_path / "a" / "x.png", blob_image(60, 90, RED_BOX))
    second = save(tmp_path / "b" / "x.png", blob_image(40, 40, (0, 0, 9, 9), (0, 0, 255)))
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "out"
    code = main(
        [
            str(tmp_path / "a"),
            str(second),
            str(tmp_path / "nothing"),
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--json",
            "--class",
            "2",
            "--class",
            "3",
            "0",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert error_lines(captured.err) == [
        f"onnxcam: {tmp_path / 'nothing'}: no image files in this folder "
        "(.jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp)"
    ]
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in reports] == [str(first), str(second)]
    for report in reports:
        assert [m["class_index"] for m in report["maps"]] == [2, 3, 0]
    assert Path(reports[0]["maps"][0]["overlay"]).name.startswith("x_")
    assert Path(reports[1]["maps"][0]["overlay"]).name.startswith("x-2_")
    assert len(os.listdir(out)) == 2 * 3 * 2


def test_progress_bar_on_a_terminal_for_more_than_three_images(model_path, tmp_path, capsys, monkeypatch):
    images = [str(save(tmp_path / f"{i}.png", blob_image(20, 20, (i, i, 9, 9)))) for i in range(4)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*images, "--model", str(model_path), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert "4/4" in capsys.readouterr().err
    assert main([*images[:3], "--model", str(model_path), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert "3/3" not in capsys.readouterr().err


def test_help_documents_the_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "2  the run could not start" in result.stdout


def test_several_methods_name_their_files_and_grid_writes_one_contact_sheet(model_path, tmp_path, capsys):
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    out = tmp_path / "out"
    methods = ["gradcam", "scorecam", "eigencam"]
    arguments = [str(image), "--model", str(model_path), "--out", str(out), "--top-k", "2", "--explain-top", "2", "--grid"]
    assert main([*arguments, "--method", ",".join(methods), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"onnxcam: {model_path}: fake, layer average_pool, gradcam, scorecam, eigencam on CPUExecutionProvider"
    ]
    report = json.loads(captured.out)
    assert [(m["method"], m["label"]) for m in report["maps"]] == [
        (method, label) for method in methods for label in ("red", "bright white")
    ]
    names = [Path(entry["overlay"]).name for entry in report["maps"]]
    assert names == [
        f"red_{rank}_{method}_overlay.png" for method in methods for rank in ("top1_red", "top2_bright_white")
    ]
    assert report["grid"] == str(out / "red_grid.png")
    grid = cv2.cvtColor(cv2.imread(report["grid"]), cv2.COLOR_BGR2RGB)
    tile_width = 90 * render.SHEET_TILE_HEIGHT // 60
    assert grid.shape == (2 * render.SHEET_TILE_HEIGHT, (1 + 3) * tile_width, 3)  # a row per class
    explanation = Explainer(model_path, device="cpu", method="scorecam").explain(blob_image(60, 90, RED_BOX), explain_top=2)
    scorecam_tile = grid[render.SHEET_TILE_HEIGHT :, 2 * tile_width : 3 * tile_width]  # 2nd class, 2nd method
    np.testing.assert_array_equal(
        scorecam_tile, render.contact_sheet([[("scorecam", explanation.overlays[1])]])
    )
    assert len(os.listdir(out)) == 3 * 2 * 2 + 1  # nothing else, no temporary files
    assert main([*arguments, "--method", "layercam"]) == 0  # one method: no method tag in the table
    table = capsys.readouterr().out
    assert "layercam  peak" not in table and f"  grid {out / 'red_grid.png'}" in table
    assert (out / "red_top1_red_layercam_overlay.png").is_file()


def test_smoothing_and_channel_flags_reach_the_explainer(model_path, tmp_path, capsys):
    image = blob_image(60, 90, RED_BOX)
    path = save(tmp_path / "red.png", image)
    flags = ["--method", "scorecam", "--aug-smooth", "--eigen-smooth", "--max-channels", "2", "--json"]
    assert main([str(path), "--model", str(model_path), "--out", str(tmp_path / "out"), *flags]) == 0
    heatmap = np.load(json.loads(capsys.readouterr().out)["maps"][0]["heatmap"])
    options = {"aug_smooth": True, "eigen_smooth": True, "max_channels": 2}
    expected = Explainer(model_path, device="cpu", method="scorecam", **options).explain(image).heatmaps[0]
    np.testing.assert_allclose(heatmap, expected, atol=1e-6)
    plain = Explainer(model_path, device="cpu", method="scorecam").explain(image).heatmaps[0]
    assert not np.allclose(heatmap, plain, atol=1e-3)


def test_random_weights_are_said_once_per_run_and_in_the_json(tmp_path, capsys):
    from runtime import contract
    from tests.fake_model import fake_metadata

    metadata = fake_metadata() | {
        contract.META_WEIGHTS: json.dumps({"source": "none (random, seed 0)", "sha256": "0" * 64, "random": True})
    }
    model = write_fake_model(tmp_path / "random.onnx", metadata)
    images = [save(tmp_path / f"{name}.png", blob_image(40, 40, (0, 0, 9, 9))) for name in ("a", "b")]
    assert main([*map(str, images), "--model", str(model), "--out", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "random weights" in line]
    assert warnings == [
        f"onnxcam: warning: {model} was exported with random weights (none (random, seed 0)): "
        "its predictions and maps mean nothing"
    ]
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert [report["weights"] for report in reports] == [{"source": "none (random, seed 0)", "random": True}] * 2


def test_file_names_tell_ranks_from_class_indices_and_methods_never_overwrite(model_path, tmp_path, capsys):
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    out = tmp_path / "out"
    arguments = [str(image), "--model", str(model_path), "--out", str(out)]
    assert main([*arguments, "--class", "3", "0"]) == 0
    assert main([*arguments, "--top-k", "1"]) == 0
    assert main([*arguments, "--top-k", "1", "--method", "layercam"]) == 0
    capsys.readouterr()
    assert sorted(name for name in os.listdir(out) if name.endswith(".png")) == [
        "red_c0_red_overlay.png",
        "red_c3_bright_white_overlay.png",
        "red_top1_red_layercam_overlay.png",
        "red_top1_red_overlay.png",
    ]
