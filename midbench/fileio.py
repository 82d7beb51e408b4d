"""Atomic file writes (a crash leaves either the old file or the new one, never a torn file), exclusive locks, and
a scan of untrusted pickles before they are unpickled.

Write to a temporary file in the same directory, fsync it, ``os.replace`` it over the target, then fsync the
directory so the rename itself survives a power loss (docs/reliability.md, "Faults that lose nothing": every write
is atomic).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from midbench.errors import ArtifactError, UsageError


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary temporary file that replaces ``path`` only if the block finishes without error.

    Raises:
        ArtifactError: the disk is full (exit 3); the previous file at ``path`` stays intact.
        UsageError: the directory cannot be created or written.
    """
    target = Path(path)
    ensure_writable_dir(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    watched: _WatchedHandle | None = None
    try:
        # mkstemp creates the file private (0600); give it the permissions a plain open() would have.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            watched = _WatchedHandle(handle)
            yield cast(BinaryIO, watched)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as error:
        _remove_quietly(tmp_name)
        cause = error if isinstance(error, OSError) else watched.error if watched is not None else None
        if cause is not None and _is_disk_full(cause):
            raise _disk_full(target) from error
        raise
    _fsync_dir(target.parent)


def _is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def _disk_full(target: Path) -> ArtifactError:
    """The one line for a full disk (exit 3): every write goes through :func:`atomic_writer` or the lock files, so
    the file that was being written is the only one affected and its previous version is intact."""
    return ArtifactError(f"disk full while writing {target}; free space and retry (the previous file is intact)")


class _WatchedHandle:
    """The temporary file's handle, remembering an ``OSError`` raised by a write. Some writers turn it into an error
    of their own (``torch.save``'s zip writer raises ``RuntimeError: unexpected pos``), and a full disk must still
    be reported as one (found on a real full tmpfs: tests/test_disk_full.py)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:  # noqa: ANN401 - whatever the wrapped handle takes
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the wrapped handle's attributes
        return getattr(self._handle, name)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Atomically replace ``path`` with whatever ``write(handle)`` writes."""
    with atomic_writer(path) as handle:
        write(handle)


def ensure_writable_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check it is writable, before any compute is spent.

    Raises:
        UsageError: it cannot be created or is not writable (docs/reliability.md, bad input 11).
    """
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create directory {folder}: {error.strerror}; choose another location") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"directory {folder} is not writable; choose another location")
    return folder


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Directories cannot be opened for fsync on every platform; losing this only weakens power-loss safety.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def safe_file_name(name: str) -> str:
    """``name`` as a file-name component: every character but letters, digits, ``-``, ``_`` and ``.`` becomes
    ``-`` (an empty name becomes ``model``). Result files and evaluation states are named with it."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name) or "model"


def try_lock(path: Path) -> BinaryIO | None:
    """An exclusive ``flock`` on ``path`` (created if needed), or ``None`` if another process holds it.

    A finished run may delete its lock file while holding it, so a process that opened the old file just before may
    lock a file that is no longer at ``path``; checking that the locked file is still the one at ``path`` (and
    trying again otherwise) keeps two processes from both believing they own what it guards. Used by resumable
    evaluations (their state) and sweeps (their folder).
    """
    for _ in range(100):
        # unbuffered: what hold_output writes reaches the file at once, and close() has nothing left to flush
        handle = open(path, "ab", buffering=0)  # noqa: SIM115 - held by the caller until it is done
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except OSError:
            return handle  # a filesystem without flock: resumable still, only unguarded against a concurrent twin
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # locked a file that was just removed: open the new one
    raise UsageError(f"could not lock {path}; remove it and rerun")


def hold_output(path: Path, what: str, fix: str) -> BinaryIO:
    """Take the lock file ``path`` guarding an output (a training folder, a sweep folder, an evaluation's state) for
    this process, and write into it who holds it: process id, host and start time. The lock is the kernel's
    ``flock``, released when the process ends however it ends, so a crashed run's lock is taken over by the next
    run rather than left forever (docs/reliability.md, "One writer per output"). Close the returned handle to
    release it.

    Raises:
        UsageError: another live process holds it; the message names its pid and host, then ``fix``.
    """
    handle = try_lock(path)
    if handle is None:
        raise UsageError(f"{what} is being written by {_holder(path)}; {fix}")
    import socket
    import time

    try:
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        handle.flush()
    except OSError as error:
        release_output(handle)
        if _is_disk_full(error):
            raise _disk_full(path) from error
        raise
    return handle


def release_output(handle: BinaryIO, remove: bool = True) -> None:
    """Give up a lock taken by :func:`hold_output` (or :func:`try_lock`), removing its file first unless ``remove``
    is False: removing it while still held is safe, :func:`try_lock` says why."""
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
    handle.close()


def _holder(path: Path) -> str:
    """Who holds the lock file ``path``, as written by :func:`hold_output`."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return f"process {int(owner['pid'])} on {owner['host']} (since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):  # just taken, not yet written; or written by older code
        return "another process"


#: the largest memo index an untrusted pickle may name (real files use thousands at most). CPython's C unpickler
#: grows its memo table to the largest index it meets, so one corrupt 4-byte index has it allocate gigabytes before
#: anything fails: tests/test_fuzz.py found a flipped byte that took 55 s and 10 GB.
MAX_PICKLE_MEMO = 1 << 20
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def check_pickle_memo(stream: BinaryIO) -> None:
    """Scan the pickle at ``stream``'s position without running any of it (``pickletools.genops`` only decodes
    opcodes), then return the stream to that position: the unpickler that follows never meets a memo index
    above :data:`MAX_PICKLE_MEMO`.

    Raises:
        ValueError: such an index, or bytes that are not a whole pickle (an unknown opcode, cut short).
    """
    import pickletools

    start = stream.tell()
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            if opcode.name in _MEMO_OPCODES and int(argument) > MAX_PICKLE_MEMO:
                raise ValueError(f"the pickle names memo entry {argument}, beyond any real file's")
    finally:
        stream.seek(start)
