"""SOURCE arguments -> the list of image paths or URIs, through pyarrow's filesystems."""

import fnmatch
import io
import os

import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runtime.images import IMAGE_SUFFIXES

GLOB_CHARACTERS = "*?["
LIST_SUFFIXES = (".txt", ".lst")
PATH_COLUMN = "path"


class SourceError(Exception):
    """A SOURCE cannot be expanded; the message is one line naming it."""


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of `uri` (a local path or any URI pyarrow reads) and the path within it."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError:  # a relative local path (pyarrow.ArrowInvalid is a ValueError)
        local = pafs.LocalFileSystem()
        return local, local.normalize_path(os.path.abspath(uri))


def expand(sources: list[str]) -> list[str]:
    """Every SOURCE expanded, in order, each input once: folders walked recursively for images,
    globs matched, .txt/.lst read as one path a line, .parquet/.csv read from their `path`
    column, anything else taken as an image (a missing one becomes a failed row later)."""
    found: list[str] = []
    for source in sources:
        found += _expand_one(source)
    return list(dict.fromkeys(found))


def _expand_one(source: str) -> list[str]:
    fs, path = filesystem(source)
    prefix = _uri_prefix(source, path)
    if any(character in path for character in GLOB_CHARACTERS):
        return [prefix + match for match in _glob(fs, path)]
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        return [prefix + image for image in _images_under(fs, path)]
    lower = path.lower()
    if kind == pafs.FileType.File and lower.endswith((".parquet", ".csv") + LIST_SUFFIXES):
        return _listed(fs, path, source)
    return [source]


def _uri_prefix(source: str, path: str) -> str:
    """'s3://' for 's3://bucket/key' (pyarrow returns 'bucket/key'); '' for local paths."""
    scheme, separator, _ = source.partition("://")
    return f"{scheme}://" if separator and scheme != "file" else ""


def _images_under(fs: pafs.FileSystem, folder: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    return sorted(
        info.path for info in infos
        if info.type == pafs.FileType.File
        and not any(part.startswith(".") for part in info.path[len(folder):].split("/"))
        and info.path.lower().endswith(IMAGE_SUFFIXES)
    )


def _glob(fs: pafs.FileSystem, pattern: str) -> list[str]:
    """Files matching `pattern` ('*' may cross '/'), searched under its first wildcard's folder."""
    fixed = pattern[: min(pattern.index(c) for c in GLOB_CHARACTERS if c in pattern)]
    base = fixed.rsplit("/", 1)[0] if "/" in fixed else "."
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError:
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern))


def _listed(fs: pafs.FileSystem, path: str, source: str) -> list[str]:
    """The paths a list file names: one a line, or a Parquet/CSV `path` column."""
    try:
        if path.lower().endswith(LIST_SUFFIXES):
            with fs.open_input_stream(path) as stream:
                text = stream.read().decode("utf-8")
            return [line.strip() for line in text.splitlines() if line.strip()]
        with fs.open_input_file(path) as file:
            table = (
                pq.read_table(file, columns=[PATH_COLUMN]) if path.lower().endswith(".parquet")
                else pa_csv.read_csv(io.BytesIO(file.read()))
            )
    except (OSError, ValueError) as error:  # ArrowInvalid and UnicodeDecodeError are ValueErrors
        raise SourceError(f"{source}: cannot read the list ({' '.join(str(error).split())})") from None
    if PATH_COLUMN not in table.column_names:
        raise SourceError(f"{source}: no '{PATH_COLUMN}' column (it has {', '.join(table.column_names)})")
    return [str(value) for value in table.column(PATH_COLUMN).to_pylist() if value]
