"""The filesystems of inputs and outputs: local paths, or any URI pyarrow reads (s3://, gs://, ...).

Local inputs (and file:// URIs) are read through the CLI's checked reader (runtime.images.read_file:
regular files only, at most MAX_FILE_BYTES, the same messages); remote reads are bounded the same
way. Every output file is written to a hidden temporary and moved into place."""

import os
import uuid

import pyarrow.fs as pafs

from ..errors import ImageError, one_line
from ..images import read_file, read_stream


def is_uri(path: str) -> bool:
    """'s3://bucket/key' and 'file:///x' are URIs; anything else is a local path."""
    return "://" in path


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of `uri` (a local path or any URI pyarrow reads) and the path within it."""
    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def read_input(path: str) -> bytes:
    """One input's bytes; ImageError (naming `path`) when it cannot be used. Local paths (and
    file:// URIs) through the CLI's reader: regular files only, at most MAX_FILE_BYTES."""
    try:
        fs, inner = filesystem(path)
    except (OSError, ValueError) as error:
        raise ImageError(path, f"cannot read file: {one_line(error)}") from None
    if isinstance(fs, pafs.LocalFileSystem):
        return read_file(inner, path)
    return read_remote(fs, inner, path)


def read_remote(fs: pafs.FileSystem, inner: str, source: str) -> bytes:
    """A file of a remote filesystem, refused from its listed size and never read past the limit."""
    try:
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise ImageError(source, "file not found")
        if info.type == pafs.FileType.Directory:
            raise ImageError(source, "is a directory, not an image file")
        with fs.open_input_stream(inner) as stream:
            return read_stream(stream, info.size, source)
    except (OSError, ValueError) as error:  # pyarrow's errors are OSErrors or ValueErrors
        raise ImageError(source, f"cannot read file: {one_line(error)}") from None


def write_atomically(fs: pafs.FileSystem, path: str, data: bytes | memoryview) -> None:
    """A hidden temporary beside `path` (Parquet readers skip '.' names), then moved over it;
    the temporary is removed when the write fails."""
    folder, name = path.rsplit("/", 1)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(temporary) as stream:
            stream.write(data)
        fs.move(temporary, path)
    except BaseException:
        delete_quietly(fs, temporary)
        raise


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass
