"""The output folder's layout: DIR/results/ holds one Parquet shard per group of inputs,
rRRR-GGGGGGG.parquet (run, group); DIR/overlays/ and DIR/heatmaps/ hold the images of the
groups, named rRRR-GGGGGGG-P_... (P: the input's position in its group). What is written, and
`sweep`, which removes what no shard accounts for."""

import re

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from .storage import delete_quietly

RESULTS = "results"
IMAGE_FOLDERS = ("overlays", "heatmaps")
PREDICTION = pa.struct([("index", pa.int64()), ("label", pa.string()), ("probability", pa.float64())])
CLASS_MAP = pa.struct([  # runtime.results.map_record's keys, with the cam
    ("method", pa.string()), ("class_index", pa.int64()), ("label", pa.string()), ("rank", pa.int64()),
    ("peak", pa.list_(pa.int64())), ("cam", pa.list_(pa.list_(pa.float32()))),
])
SCHEMA = pa.schema([  # the job's own fields (path, ok, error), then Explanation.to_record()'s
    ("path", pa.string()), ("ok", pa.bool_()), ("error", pa.string()),
    ("predictions", pa.list_(PREDICTION)), ("maps", pa.list_(CLASS_MAP)),
])
GROUP_PREFIX = re.compile(r"(r\d{3,}-\d{7,})[-.]")  # the shard a written file belongs to


def shard_name(run: int, group: int) -> str:
    return f"r{run:03d}-{group:07d}.parquet"


def written(fs: pafs.FileSystem, root: str) -> pa.Table:
    """The path and ok columns of every shard under DIR/results/ (empty when there are none)."""
    folder = f"{root}/{RESULTS}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return SCHEMA.empty_table().select(["path", "ok"])
    dataset = pads.dataset(folder, filesystem=fs, format="parquet", schema=SCHEMA)
    return dataset.to_table(columns=["path", "ok"])


def sweep(fs: pafs.FileSystem, root: str, orphans: bool) -> int:
    """Remove what no shard accounts for: temporaries left by a killed writer and, with `orphans`
    (only when no actor of this output can still be running: before a job starts), the overlays
    and heatmaps of groups whose shard was never written. Returns the number of files removed."""
    shards = {name.removesuffix(".parquet") for name in shard_names(fs, root)}
    removed = 0
    for folder in (root, f"{root}/{RESULTS}", *(f"{root}/{name}" for name in IMAGE_FOLDERS)):
        for name in _names(fs, folder):
            group = GROUP_PREFIX.match(name)
            is_temporary = name.startswith(".") and name.endswith((".tmp", ".attempts"))
            is_orphan = orphans and folder != f"{root}/{RESULTS}" and group and group.group(1) not in shards
            if is_temporary or is_orphan:
                delete_quietly(fs, f"{folder}/{name}")
                removed += 1
    return removed


def shard_names(fs: pafs.FileSystem, root: str) -> list[str]:
    return [name for name in _names(fs, f"{root}/{RESULTS}") if name.endswith(".parquet") and not name.startswith(".")]


def _names(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The names of the files directly in `folder` (none when it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return [info.base_name for info in infos if info.type == pafs.FileType.File]
