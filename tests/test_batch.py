"""python -m runtime.batch on a local Ray (num_cpus=2) with the fake model: every input once,
rows equal to the CLI's --json and Explainer's maps, a SIGKILLed actor, resume, Parquet lists."""

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import ray

from runtime import Explainer, contract
from runtime.batch.__main__ import main
from tests.fake_model import blob_image, fake_metadata, write_fake_model

GOOD, MAX_PIXELS = 90, 100_000


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, object_store_memory=300_000_000, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """(model, good image paths, bad image paths): 90 coloured blobs, 10 unusable files."""
    folder = tmp_path_factory.mktemp("collection")
    model = write_fake_model(folder / "fake.onnx")
    images = folder / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = []
    for i in range(GOOD):
        height, width = int(rng.integers(24, 80)), int(rng.integers(24, 80))
        x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        path = images / ("sub" if i % 3 else "") / f"img{i:03d}.png"
        cv2.imwrite(str(path), blob_image(height, width, (x, y, x + 8, y + 8), colour)[:, :, ::-1])
        good.append(str(path))
    png = (images / "img000.png").read_bytes()
    bad_files = {f"truncated{i}.png": png[: 40 + i] for i in range(4)}
    bad_files |= {f"text{i}.jpg": b"not an image at all" for i in range(3)}
    bad_files |= {f"empty{i}.png": b"" for i in range(2)}
    ok, huge = cv2.imencode(".png", np.zeros((400, 300, 3), np.uint8))  # 120 000 pixels > MAX_PIXELS
    bad_files["huge.png"] = huge.tobytes()
    bad = []
    for name, data in bad_files.items():
        (images / name).write_bytes(data)
        bad.append(str(images / name))
    return model, good, bad


def batch(*arguments: str) -> int:
    return main([*map(str, arguments), "--max-pixels", str(MAX_PIXELS)])


def results(output: Path) -> list[dict]:
    return pads.dataset(output / "results", format="parquet").to_table().to_pylist()


def assert_each_once(rows: list[dict], good: list[str], bad: list[str]) -> None:
    counts = collections.Counter(row["path"] for row in rows)
    assert sorted(counts) == sorted(good + bad)
    assert set(counts.values()) == {1}
    failed = {row["path"]: row["error"] for row in rows if not row["ok"]}
    assert sorted(failed) == sorted(bad)
    for path, error in failed.items():
        assert error.startswith(f"{path}: ") and "\n" not in error


def test_every_row_once_and_equal_to_the_cli_and_explainer(local_ray, collection, tmp_path, capsys):
    model, good, bad = collection
    output = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert batch(Path(good[0]).parent.parent, "--model", model, "--output", output, "--batch-size", "8",
                     "--explain-top", "3") == 1
    assert not [w for w in caught if "ray_remote_args" in str(w.message)]  # deprecated, gone in Ray 2.64
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{GOOD} ok, 10 failed, ")
    rows = results(output)
    assert_each_once(rows, good, bad)
    by_path = {row["path"]: row for row in rows}
    cli = subprocess.run(
        [sys.executable, "-m", "runtime", *good, "--model", str(model), "--json", "--out", str(tmp_path / "cli"),
         "--explain-top", "3"],
        capture_output=True, text=True, check=True,
    )
    reports = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(reports) == GOOD
    for report in reports:
        row = by_path[report["image"]]
        assert [p["index"] for p in row["predictions"]] == [p["index"] for p in report["predictions"]]
        assert [p["label"] for p in row["predictions"]] == [p["label"] for p in report["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in row["predictions"]],
                                   [p["probability"] for p in report["predictions"]], atol=1e-6)
        shared = [{key: value for key, value in m.items() if key not in ("overlay", "heatmap")} for m in report["maps"]]
        assert [{key: value for key, value in m.items() if key != "cam"} for m in row["maps"]] == shared  # one record
    explainer = Explainer(model, "cpu")
    for outcome in explainer.explain_each(good, explain_top=3):
        row = by_path[outcome.source]
        assert len(row["maps"]) == len(outcome.explanation.maps) == 3
        for stored, class_map in zip(row["maps"], outcome.explanation.maps):
            cam = np.array(stored["cam"], np.float32)
            assert cam.shape == class_map.cam.shape == (8, 8)
            np.testing.assert_allclose(cam, class_map.cam, atol=1e-6)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"] == {"ok": GOOD, "failed": 10, "rows": 100, "missing": 0, "duplicated": 0}
    assert manifest["model"]["sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert not [name for name in os.listdir(output / "results") if not name.endswith(".parquet")]


def actor_processes() -> list[int]:
    """The pids of this test's Ray Data actors (descendants of this process)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"MapWorker" in command and is_descendant(int(entry)):
            found.append(int(entry))
    return found


def is_descendant(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def test_a_killed_actor_loses_nothing(local_ray, collection, tmp_path):
    model, good, bad = collection
    output = tmp_path / "out"
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("rc", batch(
        *good, *bad, "--model", model, "--output", output, "--batch-size", "1", "--workers", "2")))
    worker.start()
    killed, deadline = None, time.monotonic() + 120
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        shards = os.listdir(output / "results") if (output / "results").is_dir() else []
        actors = actor_processes()
        if len(shards) >= 2 and actors:
            os.kill(actors[0], signal.SIGKILL)
            killed = (actors[0], len(shards))
        time.sleep(0.005)
    assert killed is not None and worker.is_alive(), "the job finished before an actor could be killed"
    assert killed[1] < 100
    worker.join(timeout=300)
    assert outcome["rc"] == 1
    assert_each_once(results(output), good, bad)


def test_resume_after_a_stopped_job(local_ray, collection, tmp_path, capsys):
    model, good, bad = collection
    output = tmp_path / "out"
    assert batch(*good, *bad, "--model", model, "--output", output, "--batch-size", "10") == 1
    shards = sorted((output / "results").iterdir())
    for shard in shards[::2]:  # the job "stopped" with half its shards written
        shard.unlink()
    kept = {row["path"] for row in results(output)}
    assert 0 < len(kept) < 100
    assert batch(*good, *bad, "--model", model, "--output", output) == 2  # no --resume
    assert "--resume" in capsys.readouterr().err
    # one name, layers and weights hash, but another preprocessing or other labels: another model
    for other in (write_fake_model(tmp_path / "torch.onnx", fake_metadata() | {contract.META_PREPROCESSING: "torch"}),
                  write_fake_model(tmp_path / "labels.onnx", fake_metadata(labels=["r", "g", "b", "w"]))):
        assert batch(*good, *bad, "--model", other, "--output", output, "--resume") == 2
        assert "made with another model file" in capsys.readouterr().err
    assert batch(*good, *bad, "--model", model, "--output", output, "--resume", "--top-k", "2") == 2
    assert "top_k" in capsys.readouterr().err
    assert batch(*good, *bad, "--model", model, "--output", output, "--resume", "--batch-size", "10") == 1
    rows = results(output)
    assert_each_once(rows, good, bad)
    resumed = pads.dataset([str(p) for p in (output / "results").glob("r001-*.parquet")], format="parquet")
    assert set(resumed.to_table().column("path").to_pylist()) == set(good + bad) - kept
    assert json.loads((output / "manifest.json").read_text())["runs"] == 2


def test_a_parquet_list_as_source(local_ray, collection, tmp_path):
    model, good, bad = collection
    listing = tmp_path / "list.parquet"
    chosen = good[:12] + bad[:2] + [str(tmp_path / "missing.png")]
    pq.write_table(pa.table({"path": chosen, "other": list(range(len(chosen)))}), listing)
    output = tmp_path / "out"
    assert batch(listing, "--model", model, "--output", output, "--workers", "1", "--overlays", "--heatmaps") == 1
    rows = results(output)
    assert sorted(row["path"] for row in rows) == sorted(chosen)
    assert len(list((output / "overlays").glob("*.png"))) == len(list((output / "heatmaps").glob("*.npy"))) == 12  # the predicted class's map
    missing = next(row for row in rows if row["path"].endswith("missing.png"))
    assert not missing["ok"] and missing["error"] == f"{missing['path']}: file not found"  # the CLI's message


def test_without_ray_one_line_says_what_to_install(collection, tmp_path):
    model, good, _ = collection
    blocker = ("import sys; sys.modules['ray'] = sys.modules['pyarrow'] = None; from runtime.batch.__main__ import main; "
               f"sys.exit(main({[good[0], '--model', str(model), '--output', str(tmp_path / 'out')]!r}))")
    finished = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        'onnxcam batch: Ray is not installed: pip install "onnxcam[ray]" (or pip install "ray[data]")']
    assert not (tmp_path / "out").exists()


def finished_within(seconds: float, *arguments) -> int:
    """batch(*arguments)'s exit code; a failure, not a hang, when it runs longer than `seconds`."""
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("rc", batch(*arguments)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert "rc" in outcome, f"the job was still running after {seconds} s"
    return outcome["rc"]


def test_a_fifo_a_device_a_loop_and_a_name_that_is_not_utf8(local_ray, collection, tmp_path):
    """Each of these stopped or hung the whole job; now each is one row and the job finishes."""
    model, good, _ = collection
    folder = tmp_path / "odd"
    (folder / "sub").mkdir(parents=True)
    copied = [folder / "a.png", folder / "sub" / os.fsdecode(b"caf\xe9.png")]
    for source, target in zip(good, copied):
        target.write_bytes(Path(source).read_bytes())
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "sub" / "loop").symlink_to("..")
    output = tmp_path / "out"
    assert finished_within(120, folder, "--model", model, "--output", output) == 1
    rows = {row["path"]: row for row in results(output)}
    assert sorted(rows) == sorted([str(folder / "a.png"), str(folder / "sub" / "caf\\xe9.png"),
                                   str(folder / "pipe.png"), str(folder / "zero.png")])
    assert [rows[str(path)]["ok"] for path in (folder / "a.png", folder / "pipe.png", folder / "zero.png")] == [
        True, False, False]
    assert rows[str(folder / "sub" / "caf\\xe9.png")]["ok"]
    assert rows[str(folder / "pipe.png")]["error"].endswith("not a regular file (a FIFO, socket or device); give an image file")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 160 KiB tmpfs (root only): a disk that fills part way through a job."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_resume_finishes_it(local_ray, collection, tiny_disk, capsys):
    model, good, _ = collection
    output = tiny_disk / "out"
    arguments = [*good, "--model", model, "--output", output, "--batch-size", "4", "--overlays", "--heatmaps"]
    assert batch(*arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"onnxcam batch: {output}: cannot write (No space left on device)")
    assert lines[-1].endswith("make room, then finish with --resume")
    assert not [line for line in lines if "Traceback" in line or "RayTaskError" in line]
    assert not [path for path in output.rglob(".*") if path.name.endswith(".tmp")]
    kept = len(results(output))
    assert 0 < kept < GOOD
    deadline = time.monotonic() + 60  # the stopped job's actors finish the groups they hold, then end
    while actor_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert batch(*arguments, "--resume") == 0
    rows = results(output)
    assert_each_once(rows, good, [])
    for folder, suffix in (("overlays", ".png"), ("heatmaps", ".npy")):  # one per row: no orphan, no duplicate
        assert sorted(path.name for path in (output / folder).iterdir()) == sorted(
            f"{name}{suffix}" for name in written_images(output))


def written_images(output: Path) -> list[str]:
    """The image names the shards account for: <shard>-<position>_<stem>_gradcam_c<class>."""
    names = []
    for shard in sorted((output / "results").glob("*.parquet")):
        for position, row in enumerate(pq.read_table(shard).to_pylist()):
            names += [f"{shard.stem}-{position}_{Path(row['path']).stem}_gradcam_c{m['class_index']}" for m in row["maps"]]
    return names


def test_more_workers_than_the_cluster_can_run_is_refused_before_anything_is_written(local_ray, collection,
                                                                                      tmp_path, capsys):
    model, good, _ = collection
    output = tmp_path / "out"
    assert finished_within(60, *good[:4], "--model", model, "--output", output, "--workers", "1000") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "onnxcam batch: workers 1000: the cluster has 2 CPUs (one per worker); give at most 2")  # 100000 hung before
    assert not output.exists()
