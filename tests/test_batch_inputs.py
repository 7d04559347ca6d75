"""The batch job's inputs and outputs without a Ray cluster: sources expanded (symbolic link loops,
names that are not UTF-8, CSV lists), every input read through the CLI's checked reader, a group's
files written whole or not at all (a full disk), maps as many as the rows say, manifests checked."""

import errno
import hashlib
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pyarrow.fs as pafs
import pytest

ray = pytest.importorskip("ray")

from runtime.batch import job, shards, sources, storage  # noqa: E402
from runtime import Explainer  # noqa: E402
from runtime.batch.__main__ import main  # noqa: E402
from runtime.images import MAX_FILE_BYTES, read_image  # noqa: E402
from runtime.targets import Targets  # noqa: E402
from tests import fake_model  # noqa: E402
from tests.fake_model import blob_image, fake_metadata, write_fake_model  # noqa: E402

NOT_UTF8 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: its byte 0xe9 is not UTF-8


def write_image(path: Path, colour=(255, 0, 0)) -> str:
    ok, png = cv2.imencode(".png", blob_image(40, 48, (8, 8, 24, 24), colour)[:, :, ::-1])
    path.write_bytes(png.tobytes())  # not cv2.imwrite: it crashes on a name that is not UTF-8
    return str(path)


def model_and_images(folder: Path, count: int) -> tuple[Path, Path]:
    """The fake model and a folder of `count` small images of different colours."""
    images = folder / "images"
    images.mkdir()
    for i in range(count):
        write_image(images / f"{i:03d}.png", (i % 256, 255 - i % 256, 90))
    return write_fake_model(folder / "fake.onnx"), images


def settings(model: Path, output: Path, targets: Targets = Targets(), **changes) -> job.Settings:
    values = dict(model=str(model), device="cpu", batch_size=8, max_pixels=100_000, aug_smooth=False,
                  eigen_smooth=False, max_channels=256, targets=targets, output=str(output), run=0, overlays=False,
                  heatmaps=False)
    return job.Settings(**(values | changes))


def finishing(function, seconds: float = 30):
    """function()'s result, or a failure when it has not returned within `seconds` (a hang)."""
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", function()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert "value" in result, f"still running after {seconds} s"
    return result["value"]


@pytest.fixture
def model(tmp_path) -> Path:
    return write_fake_model(tmp_path / "fake.onnx")


def prepared(output: Path) -> None:
    """The output folder as the job's driver makes it before the actors start."""
    for folder in (shards.RESULTS, "overlays", "heatmaps"):
        (output / folder).mkdir(parents=True, exist_ok=True)


def test_a_symlink_loop_adds_nothing(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    expected = [write_image(images / "a.png"), write_image(images / "sub" / "b.png")]
    (images / "sub" / "loop").symlink_to("..")  # one loop gave 82 rows; two never finished
    (images / "sub" / "loop2").symlink_to("../..")
    (images / "link").symlink_to("sub")  # a real folder reached twice: its files listed once
    found = finishing(lambda: sources.expand([str(images)]))
    assert len(found) == 2
    assert sorted(os.path.realpath(path) for path in found) == sorted(map(os.path.realpath, expected))


def test_a_file_name_that_is_not_utf8_is_an_input_like_any_other(tmp_path, model):
    images = tmp_path / "images"
    images.mkdir()
    odd = write_image(images / NOT_UTF8)
    plain = write_image(images / "plain.png")
    assert sources.expand([str(images)]) == sorted([odd, plain])
    output = tmp_path / "out"
    prepared(output)
    rows = job.ShardExplainer(settings(model, output, overlays=True)).write_group(0, [odd, plain])
    assert [row["ok"] for row in rows] == [True, True]
    assert rows[0]["path"] == str(images / "caf\\xe9.png")  # shown as the CLI prints it
    assert len(os.listdir(output / shards.RESULTS)) == 1 and len(os.listdir(output / "overlays")) == 2


def test_a_csv_path_column_is_read_as_text(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\n0001,a\n0002,b\n")  # was inferred as integers: 1, 2
    assert sources.expand([str(listing)]) == ["0001", "0002"]


def test_fifo_device_and_huge_files_are_refused_with_the_cli_messages(tmp_path, model):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(3 << 30)  # 3 GiB of nothing: a worker read all of it before
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    good = write_image(tmp_path / "good.png")
    paths = [str(fifo), str(sparse), str(zero), "/dev/zero", good]
    output = tmp_path / "out"
    prepared(output)
    rows = finishing(lambda: job.ShardExplainer(settings(model, output)).write_group(0, paths))
    assert [row["ok"] for row in rows] == [False, False, False, False, True]
    for path, row in zip(paths[:4], rows, strict=False):
        with pytest.raises(Exception) as cli:
            read_image(path, path)  # what the CLI does with the same path
        assert row["error"] == str(cli.value)
    assert rows[1]["error"] == f"{sparse}: file is {3 << 30} bytes, over the {MAX_FILE_BYTES}-byte limit"
    assert "not a regular file" in rows[0]["error"]


def test_remote_reads_are_bounded_like_local_ones(tmp_path):
    """A filesystem that is not the local one (as s3:// would be) is refused from its listed size."""
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    small = tmp_path / "small.png"
    small.write_bytes(b"0123")
    remote = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert storage.read_remote(remote, "small.png", "s3://b/small.png") == b"0123"
    with pytest.raises(Exception, match=r"^s3://b/huge.png: file is \d+ bytes, over the"):
        storage.read_remote(remote, "huge.png", "s3://b/huge.png")
    with pytest.raises(Exception, match="^s3://b/none.png: file not found$"):
        storage.read_remote(remote, "none.png", "s3://b/none.png")


def test_every_heatmap_is_written_with_120_maps(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_model, "WEIGHTS", np.random.default_rng(0).normal(size=(3, 120)).astype(np.float32))
    model = write_fake_model(tmp_path / "many.onnx", fake_metadata(labels=[f"class {i}" for i in range(120)]))
    output = tmp_path / "out"
    prepared(output)
    explainer = job.ShardExplainer(settings(model, output, Targets(top_k=3, explain_top=120), heatmaps=True))
    rows = explainer.write_group(0, [write_image(tmp_path / "one.png")])
    assert len(rows[0]["maps"]) == 120
    assert len(os.listdir(output / "heatmaps")) == 120  # 99 before: zip with [None] * 99
    assert os.listdir(output / "overlays") == []


class FullDisk:
    """A local filesystem whose writes fail with ENOSPC once `room` files have been written."""

    def __init__(self, room: int) -> None:
        self.local, self.room = pafs.LocalFileSystem(), room

    def open_output_stream(self, path):
        stream = self.local.open_output_stream(path)
        self.room -= 1
        if self.room >= 0:
            return stream
        stream.close()  # the temporary exists, as on a disk that filled while it was written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.local, name)


def test_a_full_disk_removes_the_groups_files_and_says_so(tmp_path, model):
    output = tmp_path / "out"
    prepared(output)
    explainer = job.ShardExplainer(settings(model, output, overlays=True, heatmaps=True))
    explainer.fs = FullDisk(room=4)  # the group's attempts, then 2 images x (overlay, heatmap): the last fails
    paths = [write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", (0, 255, 0))]
    with pytest.raises(job.OutputError) as error:
        explainer.write_group(5, paths)
    assert str(error.value) == f"{output}: cannot write (No space left on device)"
    assert [name for folder in os.listdir(output) for name in os.listdir(output / folder)] == []
    explainer.fs = pafs.LocalFileSystem()
    assert [row["ok"] for row in explainer.write_group(5, paths)] == [True, True]
    assert len(os.listdir(output / "overlays")) == 2 and len(os.listdir(output / shards.RESULTS)) == 1


def test_sweep_removes_temporaries_and_images_of_groups_without_a_shard(tmp_path):
    output = tmp_path / "out"
    prepared(output)
    (output / shards.RESULTS / shards.shard_name(0, 1)).write_bytes(b"a shard")
    kept = [output / "overlays" / "r000-0000001-0_a_gradcam_c0.png", output / "heatmaps" / "r000-0000001-0_a_gradcam_c0.npy"]
    orphans = [output / "overlays" / "r000-0000002-0_b_gradcam_c0.png", output / shards.RESULTS / ".r000-0000002.parquet.1.tmp",
               output / ".manifest.json.2.tmp"]
    for path in kept + orphans:
        path.write_bytes(b"x")
    assert shards.sweep(pafs.LocalFileSystem(), str(output), orphans=False) == 2
    assert orphans[0].exists()
    assert shards.sweep(pafs.LocalFileSystem(), str(output), orphans=True) == 1
    assert all(path.exists() for path in kept) and not any(path.exists() for path in orphans)


@pytest.mark.parametrize("content", [b"{", b"\xff", b"[]", b'{"model": {}, "settings": {}, "runs": 1}',
                                     b'{"model": {"sha256": "0"}, "settings": {}, "runs": -1}'])
def test_a_corrupt_manifest_is_named_in_one_line(tmp_path, model, content, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "manifest.json").write_bytes(content)
    image = write_image(tmp_path / "a.png")
    assert main([image, "--model", str(model), "--output", str(output), "--resume"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onnxcam batch: {output}/manifest.json: ")
    assert "choose another --output" in lines[0]



def test_the_jobs_own_output_is_no_input(tmp_path):
    """An output folder inside a source folder: its overlays are not inputs of a resumed job."""
    images = tmp_path / "images"
    (images / "run1" / "overlays").mkdir(parents=True)
    image = write_image(images / "a.png")
    write_image(images / "run1" / "overlays" / "r000-0000000-0_a_gradcam_c0.png")
    assert sources.expand([str(images)], exclude=str(images / "run1")) == [image]
    assert len(sources.expand([str(images)])) == 2


class Died(BaseException):
    """A worker process dying (a crash, the OOM killer): nothing after it runs."""


def test_an_input_that_kills_its_worker_every_time_becomes_a_failed_row(tmp_path, model, monkeypatch):
    """Ray restarts a dead worker and retries its group without limit: a poisoned input would
    loop for ever. After one death the group is redone one input at a time; an input in flight
    at two deaths is a failed row, the others are explained."""
    output = tmp_path / "out"
    prepared(output)
    paths = [write_image(tmp_path / "a.png"), write_image(tmp_path / "poison.png", (0, 255, 0)),
             write_image(tmp_path / "c.png", (0, 0, 255))]
    explain_targets = Explainer.explain_targets

    def dies_on_poison(self, images, targets):
        if any(image == Path(paths[1]).read_bytes() for image in images):
            raise Died
        return explain_targets(self, images, targets)

    monkeypatch.setattr(Explainer, "explain_targets", dies_on_poison)
    for _ in range(2):  # the first try (the whole group), then the poison alone: each kills the worker
        with pytest.raises(Died):
            job.ShardExplainer(settings(model, output, overlays=True)).write_group(3, paths)
    rows = job.ShardExplainer(settings(model, output, overlays=True)).write_group(3, paths)  # Ray's next restart
    assert [row["ok"] for row in rows] == [True, False, True]
    assert rows[1]["error"] == f"{paths[1]}: its worker died on it 2 times (a crash, or out of memory)"
    assert sorted(os.listdir(output / shards.RESULTS)) == [shards.shard_name(0, 3)]  # the attempts file removed
    assert len(os.listdir(output / "overlays")) == 2


def test_a_resume_with_nothing_left_starts_no_ray(tmp_path, model, capsys):
    """Checked without a cluster: were Ray started here, this test would start one."""
    image = write_image(tmp_path / "a.png")
    output = tmp_path / "out"
    prepared(output)
    job.ShardExplainer(settings(model, output)).write_group(0, [image])
    settings_row = {"method": ["gradcam"], "top_k": 3, "explain_top": 1, "class_index": None, "max_pixels": 40_000_000,
                    "aug_smooth": False, "eigen_smooth": False, "max_channels": 256, "overlays": False, "heatmaps": False}
    (output / "manifest.json").write_text(json.dumps({
        "model": {"path": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()},
        "settings": settings_row, "runs": 1}))
    assert main([image, "--model", str(model), "--output", str(output), "--resume"]) == 0
    assert not ray.is_initialized()
    assert capsys.readouterr().err.strip().splitlines() == ["onnxcam batch: 1 inputs, all already done"]


def test_an_output_that_is_a_file_is_refused_in_one_line(tmp_path, model, capsys):
    output = tmp_path / "out"
    output.write_text("not a folder")
    assert main([write_image(tmp_path / "a.png"), "--model", str(model), "--output", str(output)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"onnxcam batch: {output}: is a file, not a folder; choose another --out"]
    assert not ray.is_initialized()
