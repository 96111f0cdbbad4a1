"""Files the engine owns: the cache folder, checksums, and the one atomic write.

Every file the engine writes (images, reports, cached weights, exported graphs, engines, the
backend choice) goes through ``atomic_write``: the bytes land in a temporary file in the target's
own folder, are flushed to disk, and are renamed into place, so a reader never sees half a file
and a crash leaves at most a hidden ``.NAME.*.tmp`` that ``remove_stale_temporaries`` clears.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "cache_dir", "remove_stale_temporaries", "sha256_file", "write_json_atomic"]


def cache_dir() -> Path:
    """The user cache directory for converted weights and exported graphs:
    ``$STYLEFORGE_CACHE``, or ``$XDG_CACHE_HOME/styleforge`` (``~/.cache/styleforge``)."""
    explicit = os.environ.get("STYLEFORGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "styleforge"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(target: str | os.PathLike, data: bytes | Callable[[Path], None], *, replace: bool = True,
                 exists_error: Callable[[], Exception] | None = None) -> Path:
    """Write ``data`` (bytes, or a function writing the temporary path it is given) to ``target``
    through a temporary file in the same folder and a rename.

    ``replace=False`` never clobbers: the file is linked into place, and a name taken meanwhile
    raises ``exists_error()`` (FileExistsError by default). The temporary file is removed on any
    failure, an interrupt included; the result is readable like any file (0644).
    """
    target = Path(target)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        if not isinstance(data, bytes):
            data(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600
        if replace:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            except FileExistsError:
                if exists_error is not None:
                    raise exists_error() from None
                raise
            temporary.unlink()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """JSON (indented, one trailing newline) through atomic_write: never half a report."""
    return atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the temporaries an interrupted atomic_write of ``path`` left (a kill -9 between the
    write and the rename); returns how many. Only our own ``.NAME.*.tmp`` names are touched."""
    path = Path(path)
    removed = 0
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
