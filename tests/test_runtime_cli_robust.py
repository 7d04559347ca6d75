"""The CLI under stress: per-image failures, all-or-none image sets, signals, closed pipes, odd
file names, unwritable --out, and every flag reaching the Explainer (issues #10, #16)."""

import errno
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import runtime.cli as cli
import runtime.commandline as commandline
import runtime.outputs as outputs
import runtime.writer as writer
from runtime import Explainer, render
from runtime.cli import main
from tests.fake_model import blob_image

REPO = Path(__file__).resolve().parents[1]
RED_BOX = (50, 10, 80, 30)


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def many_images(folder: Path, count: int) -> list[Path]:
    """`count` differently named hard links to one 200x200 PNG."""
    first = save(folder / "img0000.png", blob_image(200, 200, (20, 20, 120, 90)))
    for i in range(1, count):
        os.link(first, folder / f"img{i:04d}.png")
    return sorted(folder.iterdir())


def files_per_stem(out: Path) -> Counter:
    return Counter(name.split("_top")[0] for name in os.listdir(out))


def test_a_write_failure_fails_that_image_only_and_names_it(model_path, tmp_path, capsys, monkeypatch):
    good = save(tmp_path / "good.png", blob_image(60, 90, RED_BOX))
    wide = save(tmp_path / "wide.png", blob_image(30, 90, RED_BOX))
    real = outputs.encoded_image

    def fails_for_wide_images(image, file_format="png", consume=False):
        if image.shape[:2] == (30, 90):
            raise MemoryError()
        return real(image, file_format, consume)

    monkeypatch.setattr(outputs, "encoded_image", fails_for_wide_images)
    out = tmp_path / "out"
    assert main([str(wide), str(good), "--model", str(model_path), "--out", str(out), "--json", "--explain-top", "3"]) == 1
    captured = capsys.readouterr()
    assert f"onnxcam: {wide}: cannot write outputs (MemoryError: " in captured.err
    assert "run failed" not in captured.err
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == [str(good)]
    assert files_per_stem(out) == {"good": 6}


def test_a_failing_model_run_is_blamed_on_the_model_and_earlier_images_are_kept(
    model_path, tmp_path, capsys, monkeypatch
):
    images = [save(tmp_path / f"{i}.png", blob_image(40, 40, (0, 0, 9, 9))) for i in range(3)]
    real = Explainer._outputs_and_maps
    runs = []

    def fails_second_time(self, *args):
        runs.append(1)
        if len(runs) == 2:
            raise RuntimeError("onnxruntime: out of memory")
        return real(self, *args)

    monkeypatch.setattr(Explainer, "_outputs_and_maps", fails_second_time)
    out = tmp_path / "out"
    arguments = [*map(str, images), "--model", str(model_path), "--out", str(out), "--batch-size", "2", "--json",
                 "--explain-top", "3"]
    assert main(arguments) == 1
    captured = capsys.readouterr()
    assert f"onnxcam: {model_path}: run failed (RuntimeError: onnxruntime: out of memory)" in captured.err
    assert len(captured.out.splitlines()) == 2 and files_per_stem(out) == {"0": 6, "1": 6}


def test_disk_full_in_the_middle_of_an_image_leaves_none_of_its_files(model_path, tmp_path, capsys, monkeypatch):
    images = [save(tmp_path / f"{name}.png", blob_image(40, 40, (0, 0, 9, 9))) for name in ("a", "b")]
    opened = []

    def third_file_of_b_hits_a_full_disk(path, mode="r", *args, **kwargs):
        opened.append(path)
        if len(opened) == 6 + 3:  # a's six files, then b's third
            raise OSError(errno.ENOSPC, "No space left on device")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(writer, "open", third_file_of_b_hits_a_full_disk, raising=False)
    monkeypatch.setattr(cli, "WRITER_THREADS", 1)  # one writer: a's set, then b's
    out = tmp_path / "out"
    assert main([*map(str, images), "--model", str(model_path), "--out", str(out), "--explain-top", "3"]) == 1
    assert f"{images[1]}: cannot write outputs (OSError: [Errno 28] No space left on device)" in capsys.readouterr().err
    assert files_per_stem(out) == {"a": 6}  # no part of b, no temporary file


def test_a_failed_rename_removes_the_files_already_renamed(tmp_path, monkeypatch):
    real = os.replace
    calls = []

    def second_rename_fails(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(source, target)

    monkeypatch.setattr(writer.os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        writer.write_set([(str(tmp_path / name), b"x") for name in ("one", "two", "three")])
    assert os.listdir(tmp_path) == []


def test_names_that_are_not_utf8_or_hold_newlines_are_escaped_and_explained(model_path, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = blob_image(40, 40, (0, 0, 9, 9))
    for name in (b"caf\xe9.png", b"two\nlines.png"):
        Image.fromarray(image).save(os.path.join(os.fsencode(folder), name), format="PNG")
    broken = folder / "bad\nname.png"
    broken.write_bytes(b"not a png")
    result = subprocess.run(
        [sys.executable, "-m", "runtime", str(folder), "--model", str(model_path), "--out", str(tmp_path / "out"),
         "--explain-top", "3"],
        cwd=REPO, capture_output=True, env=os.environ | {"PYTHONIOENCODING": "utf-8"}, timeout=120,
    )
    stdout, stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 1, stderr
    assert f"{folder}/caf\\xe9.png\n" in stdout and f"{folder}/two\\nlines.png\n" in stdout
    assert "_overlay.png" in stdout and "Traceback" not in stderr
    [error] = [line for line in stderr.splitlines() if "bad" in line]
    assert error.startswith(f"onnxcam: {folder}/bad\\nname.png: ")
    assert sorted(files_per_stem(tmp_path / "out").values()) == [6, 6]


def test_a_very_long_file_name_is_shortened_and_kept_unique(model_path, tmp_path, capsys):
    stems = ["x" * 236, "x" * 235 + "y"]  # 240-byte names, the same for the first 127 bytes
    images = [save(tmp_path / f"{stem}.png", blob_image(40, 40, (0, 0, 9, 9))) for stem in stems]
    out = tmp_path / "out"
    assert main([*map(str, images), "--model", str(model_path), "--out", str(out), "--json", "--explain-top", "3"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = [Path(m["overlay"]).name for report in reports for m in report["maps"]]
    assert len(set(names)) == 6 and all(len(name.encode()) <= 255 for name in os.listdir(out))
    assert len(os.listdir(out)) == 12


def test_grid_of_a_one_pixel_high_image_stays_small(model_path, tmp_path, capsys):
    line = save(tmp_path / "line.png", np.full((1, 10000, 3), 200, np.uint8))
    out = tmp_path / "out"
    arguments = [str(line), "--model", str(model_path), "--out", str(out), "--grid", "--json", "--top-k", "1"]
    assert main([*arguments, "--max-pixels", "20000"]) == 0
    grid = cv2.imread(json.loads(capsys.readouterr().out)["grid"])
    assert grid.shape == (1, 2 * render.SHEET_TILE_MAX_WIDTH, 3)


def test_an_unwritable_out_is_found_before_the_model_is_loaded(model_path, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(commandline, "Explainer", no_model)
    assert main([str(image), "--model", str(model_path), "--out", str(blocker / "out")]) == 2
    assert capsys.readouterr().err == (
        f"onnxcam: {blocker / 'out'}: cannot write to the output folder (Not a directory); choose another --out\n"
    )


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_mid_run_leaves_only_whole_image_sets(model_path, tmp_path, signum, code, said):
    images = many_images(tmp_path / "photos", 400)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", str(tmp_path / "photos"), "--model", str(model_path), "--out", str(out),
         "--explain-top", "3"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and len(os.listdir(out)) >= 6):
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.splitlines()[-1] == f"onnxcam: {said}" and "Traceback" not in stderr
    counts = files_per_stem(out)
    assert 1 <= len(counts) < len(images) and set(counts.values()) == {6}  # whole sets, no .tmp


def test_a_reader_closing_the_pipe_ends_the_run_quietly(model_path, tmp_path):
    many_images(tmp_path / "photos", 300)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", str(tmp_path / "photos"), "--model", str(model_path),
         "--out", str(tmp_path / "out"), "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    json.loads(process.stdout.readline())
    process.stdout.close()  # like head -1
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert "run failed" not in stderr and "Traceback" not in stderr and "Error" not in stderr


FLAGS = [  # flag and value given, Explainer.__init__ argument or Targets field, value expected there
    (["--aug-smooth"], "aug_smooth", True),
    (["--eigen-smooth"], "eigen_smooth", True),
    (["--max-channels", "5"], "max_channels", 5),
    (["--batch-size", "3"], "batch_size", 3),
    (["--device", "cpu"], "device", "cpu"),
    (["--max-pixels", "12345"], "max_pixels", 12345),
    (["--class", "2", "1"], "classes", (2, 1)),
    (["--top-k", "2"], "top_k", 2),
    (["--method", "layercam,eigencam"], "methods", ("layercam", "eigencam")),
    (["--methods", "layercam"], "methods", ("layercam",)),  # the old spelling, an alias
    (["--explain-top", "2"], "maps_per_method", 2),
    ([], "top_k", 3),  # the default top-k
    ([], "maps_per_method", 1),  # the default: the predicted class's map only
]


@pytest.mark.parametrize(("flag", "name", "expected"), FLAGS)
def test_each_flag_reaches_the_explainer(model_path, tmp_path, capsys, monkeypatch, flag, name, expected):
    seen = {}

    class Spy(Explainer):
        def __init__(self, *args, **kwargs):
            seen.update(inspect.signature(Explainer.__init__).bind(self, *args, **kwargs).arguments)
            super().__init__(*args, **kwargs)

        def explain_targets(self, images, targets):
            seen.update(top_k=targets.top_k, classes=targets.classes, methods=targets.methods,
                        maps_per_method=targets.maps_per_method)
            return super().explain_targets(images, targets)

    monkeypatch.setattr(commandline, "Explainer", Spy)
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    assert main([str(image), "--model", str(model_path), "--out", str(tmp_path / "out"), *flag]) == 0
    assert seen[name] == expected
    defaults = {"aug_smooth": False, "eigen_smooth": False, "classes": None, "methods": ("gradcam",)}
    if flag and name in defaults:
        assert defaults[name] != expected  # the flag changed something


def test_the_provider_line_is_the_sessions(model_path, tmp_path, capsys, monkeypatch):
    class OtherProvider(Explainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.provider = "SomeOtherExecutionProvider"

    monkeypatch.setattr(commandline, "Explainer", OtherProvider)
    image = save(tmp_path / "red.png", blob_image(60, 90, RED_BOX))
    assert main([str(image), "--model", str(model_path), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.endswith("gradcam on SomeOtherExecutionProvider\n")


def test_each_overlay_and_heatmap_file_is_its_own_maps(model_path, tmp_path, capsys):
    image = blob_image(60, 90, RED_BOX)
    image[35:55, 5:30] = (0, 0, 255)  # a blue box too: the red and blue maps differ
    path = save(tmp_path / "red.png", image)
    out = tmp_path / "out"
    assert main([str(path), "--model", str(model_path), "--out", str(out), "--json", "--explain-top", "3"]) == 0
    maps = json.loads(capsys.readouterr().out)["maps"]
    explanation = Explainer(model_path, device="cpu").explain(image, explain_top=3)
    for k, entry in enumerate(maps):
        written = cv2.cvtColor(cv2.imread(entry["overlay"]), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, explanation.overlays[k])
        np.testing.assert_array_equal(np.load(entry["heatmap"]), explanation.heatmaps[k])
    assert len({m["label"] for m in maps}) == 3
    assert not np.array_equal(explanation.overlays[0], explanation.overlays[1])


def test_heatmaps_low_or_none_and_other_overlay_formats(model_path, tmp_path, capsys):
    image = blob_image(60, 90, RED_BOX)
    path = save(tmp_path / "red.png", image)
    arguments = [str(path), "--model", str(model_path), "--json", "--top-k", "1"]
    assert main([*arguments, "--out", str(tmp_path / "low"), "--heatmaps", "low", "--overlay-format", "jpg"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["maps"]
    explanation = Explainer(model_path, device="cpu").explain(image, top_k=1)
    np.testing.assert_array_equal(np.load(entry["heatmap"]), explanation.maps[0].cam)
    assert entry["overlay"].endswith("_overlay.jpg") and cv2.imread(entry["overlay"]).shape == (60, 90, 3)
    assert main([*arguments, "--out", str(tmp_path / "none"), "--heatmaps", "none", "--overlay-format", "webp"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["maps"]
    assert entry["heatmap"] is None and os.listdir(tmp_path / "none") == ["red_top1_red_overlay.webp"]


CTRL_C_WHILE_IMPORTING = """
import importlib.abc, os, runpy, signal, sys

MODULE = sys.argv.pop(1)

class CtrlCOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlCOnImport())
runpy.run_module("runtime", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["numpy", "onnxruntime", "cv2", "PIL", "isal"])
def test_ctrl_c_while_the_libraries_load_exits_130_without_a_traceback(module):
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_IMPORTING, module, "x.png", "--model", "m.onnx"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stderr) == (130, "onnxcam: interrupted\n")


def test_a_result_that_cannot_be_printed_fails_that_image_only(model_path, tmp_path, capsys, monkeypatch):
    images = [save(tmp_path / f"{name}.png", blob_image(40, 40, (0, 0, 9, 9))) for name in ("a", "b")]
    real = cli.format_result

    def fails_for_a(explanations, *args):
        if explanations[0].source.endswith("a.png"):
            raise UnicodeEncodeError("ascii", "é", 0, 1, "ordinal not in range(128)")
        return real(explanations, *args)

    monkeypatch.setattr(cli, "format_result", fails_for_a)
    assert main([*map(str, images), "--model", str(model_path), "--out", str(tmp_path / "out"), "--json"]) == 1
    captured = capsys.readouterr()
    assert f"onnxcam: {images[0]}: cannot print the result (UnicodeEncodeError: " in captured.err
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == [str(images[1])]
