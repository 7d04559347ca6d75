"""SOURCE arguments -> the list of image paths or URIs.

Local folders are walked with Python (any file name, symbolic links followed but each real folder
once); URIs through pyarrow's filesystems."""

import fnmatch
import io
import os

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import OnnxcamError, one_line
from ..images import IMAGE_SUFFIXES

from .storage import filesystem, is_uri

GLOB_CHARACTERS = "*?["
LIST_SUFFIXES = (".txt", ".lst")
PATH_COLUMN = "path"


class SourceError(OnnxcamError):
    """A SOURCE cannot be expanded; the message is one line naming it."""


def expand(sources: list[str], exclude: str | None = None) -> list[str]:
    """Every SOURCE expanded, in order, each input once: folders walked recursively for images,
    globs matched, .txt/.lst read as one path a line, .parquet/.csv read from their `path`
    column, anything else taken as an image (a missing one becomes a failed row later). Local
    paths are absolute; none under the local folder `exclude` (the job's own output: its
    overlays are no inputs of a resumed job)."""
    found: list[str] = []
    for source in sources:
        found += _expand_one(source)
    found = list(dict.fromkeys(found))
    if exclude is None or is_uri(exclude):
        return found
    inside = os.path.join(os.path.abspath(exclude), "")
    return [path for path in found if is_uri(path) or not path.startswith(inside)]


def _expand_one(source: str) -> list[str]:
    try:
        fs, path = filesystem(source)
    except (OSError, ValueError) as error:
        raise SourceError(f"{source}: {one_line(error)}") from None
    local = isinstance(fs, pafs.LocalFileSystem)
    prefix = "" if local else source.partition("://")[0] + "://"  # pyarrow drops the scheme
    if any(character in path for character in GLOB_CHARACTERS):
        return [prefix + match for match in _glob(fs, path, local)]
    if local:
        kind = "folder" if os.path.isdir(path) else "file" if os.path.isfile(path) else None
    else:
        kind = {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(fs.get_file_info(path).type)
    if kind == "folder":
        return [prefix + image for image in _files_under(fs, path, local) if _is_visible_image(image[len(path):])]
    if kind == "file" and path.lower().endswith((".parquet", ".csv") + LIST_SUFFIXES):
        return _listed(fs, path, source)
    return [path if local else source]


def _is_visible_image(relative: str) -> bool:
    return (not any(part.startswith(".") for part in relative.split("/"))
            and relative.lower().endswith(IMAGE_SUFFIXES))


def _files_under(fs: pafs.FileSystem, folder: str, local: bool) -> list[str]:
    """Every file under `folder`, sorted: locally with os.walk (names that are not UTF-8 stay
    usable), following symbolic links but each real folder once, so a link back up the tree
    adds nothing; on other filesystems through pyarrow."""
    if not local:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        return sorted(info.path for info in infos if info.type == pafs.FileType.File)
    seen: set[tuple[int, int]] = set()
    found = []
    for top, folders, files in os.walk(folder, followlinks=True):
        try:
            status = os.stat(top)
        except OSError:
            folders[:] = []
            continue
        if (status.st_dev, status.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        found += [os.path.join(top, name) for name in files]
    return sorted(found)


def _glob(fs: pafs.FileSystem, pattern: str, local: bool) -> list[str]:
    """Files matching `pattern` ('*' may cross '/'), searched under its first wildcard's folder."""
    fixed = pattern[: min(pattern.index(c) for c in GLOB_CHARACTERS if c in pattern)]
    base = (fixed.rsplit("/", 1)[0] or "/") if "/" in fixed else "."
    try:
        files = _files_under(fs, base, local)
    except OSError:
        return []
    return [path for path in files if fnmatch.fnmatch(path, pattern)]


def _listed(fs: pafs.FileSystem, path: str, source: str) -> list[str]:
    """The paths a list file names: one a line, or a Parquet/CSV `path` column (read as text:
    a name like 0001 stays 0001)."""
    try:
        if path.lower().endswith(LIST_SUFFIXES):
            with fs.open_input_stream(path) as stream:
                text = stream.read().decode("utf-8")
            return [line.strip() for line in text.splitlines() if line.strip()]
        with fs.open_input_file(path) as file:
            table = (
                pq.read_table(file, columns=[PATH_COLUMN]) if path.lower().endswith(".parquet")
                else pa_csv.read_csv(io.BytesIO(file.read()),
                                     convert_options=pa_csv.ConvertOptions(column_types={PATH_COLUMN: pa.string()}))
            )
    except (OSError, ValueError) as error:  # ArrowInvalid and UnicodeDecodeError are ValueErrors
        raise SourceError(f"{source}: cannot read the list ({one_line(error)})") from None
    if PATH_COLUMN not in table.column_names:
        raise SourceError(f"{source}: no '{PATH_COLUMN}' column (it has {', '.join(table.column_names)})")
    return [str(value) for value in table.column(PATH_COLUMN).to_pylist() if value]
