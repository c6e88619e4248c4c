"""Where a search's files live: the same calls for a local folder and a URI (``s3://``, ``gs://``, through pyarrow).

A search's folder (``--storage-path``) may be on a bucket, so everything that
reads or writes in it (results, report, scheduler state, lease, provenance)
goes through these functions rather than ``open`` or ``pathlib``:
``join``, ``exists``, ``read_text``, ``write_text``, ``write_bytes``,
``subfolders``, ``remove_file``, ``remove_tree``, and ``is_uri`` to tell the two apart.
"""

from __future__ import annotations

import uuid
from pathlib import Path


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(path)


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with ``/`` for a URI, as ``pathlib`` joins them for a local path."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base, *parts))


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs

    fs, inner = _fs(path)
    return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


def read_text(path: str) -> str:
    if not is_uri(path):
        return Path(path).read_text()
    fs, inner = _fs(path)
    with fs.open_input_stream(inner) as f:
        return f.read().decode()


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
    if not is_uri(path):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: two writers of one file (two drivers taking a lease) never share a temporary.
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        tmp.replace(p)  # readers never see a half-written file
        return
    fs, inner = _fs(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(data)


def remove_tree(path: str) -> None:
    """Delete a folder and everything in it, locally or at a URI; a missing folder is no error."""
    if not is_uri(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = _fs(path)
    if exists(path):
        fs.delete_dir(inner)


def subfolders(path: str, *, prefix: str = "") -> list[str]:
    """The folders directly inside ``path`` whose names start with ``prefix``."""
    if not is_uri(path):
        p = Path(path)
        return sorted(str(c) for c in p.iterdir() if c.is_dir() and c.name.startswith(prefix)) if p.is_dir() else []
    import pyarrow.fs

    fs, inner = _fs(path)
    scheme = str(path).split("://", 1)[0]
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return sorted(
        f"{scheme}://{i.path}"
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(prefix)
    )


def remove_file(path: str) -> None:
    """Delete one file, locally or at a URI; a missing file is no error."""
    if not is_uri(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, inner = _fs(path)
    if exists(path):
        fs.delete_file(inner)
