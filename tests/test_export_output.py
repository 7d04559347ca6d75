"""Where the export writes: refused paths, atomic writes in every path, no temporary left."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import export.output
from export.arguments import parse_args
from export.output import write_atomically
from export.errors import ExportError


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--output", ""], "--output: an empty path"),
        (["--output", "m.onnx", "--plain-output", "  "], "--plain-output: an empty path"),
        (["--output", "m.onnx", "--plain-output", "./m.onnx"], "name the same file"),
    ],
)
def test_output_paths_that_would_lose_a_model_are_refused(arguments, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(arguments)
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("export failed: arguments: ") and message in line


def test_an_existing_folder_as_output_fails_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ExportError, match=r"cannot write .*model\.onnx"):
        write_atomically(str(tmp_path / "model.onnx"), b"x" * 1000)
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.output.os, "replace", failing_replace)
    with pytest.raises(ExportError, match="No space left on device"):
        write_atomically(str(target), b"new")
    assert os.listdir(tmp_path) == ["model.onnx"] and target.read_bytes() == b"old"


def test_temporaries_of_a_killed_export_are_removed_by_the_next_one(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.onnx.onnxcam-tmp-{dead.stdout.strip()}"
    live = tmp_path / f".model.onnx.onnxcam-tmp-{os.getppid()}"  # another export, still running
    stale.write_bytes(b"half a model")
    live.write_bytes(b"being written")
    write_atomically(str(tmp_path / "model.onnx"), b"model")
    assert sorted(os.listdir(tmp_path)) == sorted(["model.onnx", live.name])
    assert (tmp_path / "model.onnx").read_bytes() == b"model"


def test_a_failed_plain_output_says_that_the_model_was_written(tmp_path):
    from tests.conftest import run_export
    from tests.keras_models import small_cnn

    small_cnn().save(tmp_path / "small.keras")
    (tmp_path / "not_a_folder").write_text("a file")
    output, plain = tmp_path / "small_gradcam.onnx", tmp_path / "not_a_folder" / "plain.onnx"
    result = run_export("--model", str(tmp_path / "small.keras"), "--preprocessing", "tf",
                        "--output", str(output), "--plain-output", str(plain))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"export failed: cannot write {plain}") and line.endswith(f"the Grad-CAM model {output} was written")
    assert output.is_file() and sorted(os.listdir(tmp_path)) == ["not_a_folder", "small.keras", "small_gradcam.onnx"]
