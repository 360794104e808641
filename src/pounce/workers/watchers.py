"""File watchers for dev reload (``--reload``): inotify, watchfiles, or polling.

Three implementations behind one small interface, chosen in this order by
:func:`make_watcher`:

* :class:`InotifyWatcher` -- Linux, stdlib only (``ctypes`` on libc's ``inotify_init1`` /
  ``inotify_add_watch`` and ``os.read``). The kernel tells us about changes, so an idle
  watcher costs nothing: it sleeps in ``poll()``. inotify watches are per directory and not
  recursive, so every directory below the roots gets its own watch, and directories that
  appear later (``mkdir``, a ``git checkout``, a move) are watched as soon as their creation
  event arrives -- and scanned once, because files created in them before the watch existed
  produced no event.
* :class:`WatchfilesWatcher` -- when the optional ``watchfiles`` package is importable
  (macOS, Windows, or when inotify is unavailable); it is event driven too.
* :class:`PollingWatcher` -- the last resort: it compares ``(mtime, size)`` snapshots and
  *sleeps* between scans, so an idle server does not burn a CPU.

Which files count is decided by :class:`PathFilter` (includes, default ``*.py``, minus
excludes such as ``.git``, ``__pycache__``, ``*.pyc``), applied to every implementation the
same way so that switching watchers never changes what triggers a reload.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import logging
import os
import select
import struct
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_INCLUDES",
    "InotifyWatcher",
    "PathFilter",
    "PollingWatcher",
    "Watcher",
    "WatchfilesWatcher",
    "make_watcher",
]

logger = logging.getLogger("pounce.error")

DEFAULT_INCLUDES: Final = ("*.py",)
#: Hidden files and directories (``.git``, ``.venv``, editor swap files), byte code, caches
#: and backup files: none of them is source code a developer edits.
DEFAULT_EXCLUDES: Final = (
    ".*", "*.py[cod]", "__pycache__", ".git", ".venv", "venv", "*~", "node_modules",
)


class PathFilter:
    """Decides whether a path (file or directory) under a watched root is relevant.

    A pattern matches a single path component (``__pycache__`` excludes that directory
    anywhere below a root) unless it contains a ``/``, in which case it is matched against
    the path relative to the root. Components *above* the root are never looked at, so a
    project that lives in ``~/.work/app`` is not excluded by ``.*``. A default exclude that
    matches an include pattern is dropped (``--reload-include .env`` drops ``.*``; ``.git``
    and ``.venv`` stay excluded by their own entries), so an explicit include always works.
    """

    def __init__(
        self,
        roots: Sequence[str],
        includes: Iterable[str] = (),
        excludes: Iterable[str] = (),
    ) -> None:
        self.roots = tuple(os.path.abspath(root) for root in roots)
        self.includes = tuple(includes) or DEFAULT_INCLUDES
        explicit = tuple(excludes)
        defaults = tuple(
            p for p in DEFAULT_EXCLUDES
            if not any(fnmatch.fnmatch(include, p) for include in self.includes)
        )
        self.excludes = defaults + explicit

    def _relative(self, path: str) -> str | None:
        path = os.path.abspath(path)
        for root in self.roots:
            if path == root:
                return ""
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return path[len(root.rstrip(os.sep)) + 1:]
        return None

    @staticmethod
    def _matches(relative: str, name: str, patterns: Sequence[str]) -> bool:
        for pattern in patterns:
            if "/" in pattern:
                if fnmatch.fnmatch(relative, pattern):
                    return True
            elif fnmatch.fnmatch(name, pattern):
                return True
        return False

    def excluded(self, path: str) -> bool:
        """True when the path or one of its components below the root is excluded."""
        relative = self._relative(path)
        if relative is None:
            return True
        if not relative:
            return False
        parts = relative.split(os.sep)
        for i, part in enumerate(parts):
            if self._matches(os.sep.join(parts[: i + 1]), part, self.excludes):
                return True
        return False

    def dir_wanted(self, path: str) -> bool:
        """Whether to descend into (and watch) this directory."""
        return not self.excluded(path)

    def __call__(self, path: str) -> bool:
        """Whether a change of this file should trigger a reload."""
        relative = self._relative(path)
        if relative is None or self.excluded(path):
            return False
        return self._matches(relative, os.path.basename(path), self.includes)


class Watcher(ABC):
    """Waits for changes of relevant files below some directories.

    ``wait(timeout)`` blocks for at most *timeout* seconds and returns the changed paths
    (empty on timeout). It returns early when changes arrive, which is what makes reload
    feel instant; the caller loops, so a short timeout is how signals and a dead child are
    noticed. Not thread-safe: one thread owns a watcher.
    """

    #: Shown in the reloader's start-up line.
    name: str = "watcher"

    def __init__(self, roots: Sequence[str], path_filter: PathFilter) -> None:
        self.roots = [os.path.abspath(root) for root in roots]
        self.filter = path_filter

    @abstractmethod
    def wait(self, timeout: float) -> set[str]:
        """Block up to *timeout* seconds; return the changed relevant paths."""

    def close(self) -> None:  # noqa: B027 - optional hook, most watchers hold nothing
        """Release OS resources."""

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _walk_dirs(root: str, path_filter: PathFilter) -> Iterator[str]:
    """Every wanted directory below (and including) *root*, pruning excluded ones."""
    if not os.path.isdir(root):
        return
    yield root
    for current, dirs, _files in os.walk(root):
        dirs[:] = [d for d in dirs if path_filter.dir_wanted(os.path.join(current, d))]
        for d in dirs:
            yield os.path.join(current, d)


# --------------------------------------------------------------------------- inotify

_IN_MODIFY: Final = 0x00000002
_IN_ATTRIB: Final = 0x00000004
_IN_CLOSE_WRITE: Final = 0x00000008
_IN_MOVED_FROM: Final = 0x00000040
_IN_MOVED_TO: Final = 0x00000080
_IN_CREATE: Final = 0x00000100
_IN_DELETE: Final = 0x00000200
_IN_DELETE_SELF: Final = 0x00000400
_IN_MOVE_SELF: Final = 0x00000800
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_IGNORED: Final = 0x00008000
_IN_ISDIR: Final = 0x40000000
_IN_NONBLOCK: Final = 0o4000
_IN_CLOEXEC: Final = 0o2000000
_MASK: Final = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
    | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF
)
_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "inotify is Linux only")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise OSError(errno.ENOSYS, "this libc has no inotify")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


class InotifyWatcher(Watcher):
    """Linux inotify through ctypes: no dependency, no polling."""

    name = "inotify"

    def __init__(self, roots: Sequence[str], path_filter: PathFilter) -> None:
        super().__init__(roots, path_filter)
        self._libc = _libc()
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self._fd: int = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._paths: dict[int, str] = {}  # watch descriptor -> directory
        self._pending: set[str] = set()  # changes found while adding watches
        try:
            for root in self.roots:
                self._watch_tree(root, report=False)
        except BaseException:
            self.close()
            raise

    def _watch_tree(self, top: str, *, report: bool) -> None:
        """Watch *top* and every wanted directory below it.

        With *report* (a directory that appeared while we run) the files already in it are
        reported, since they were created before the watch could see them.
        """
        for directory in _walk_dirs(top, self.filter):
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone again already
                if code == errno.ENOSPC:
                    raise OSError(
                        code,
                        "inotify watch limit reached; raise fs.inotify.max_user_watches or "
                        "narrow --reload-dir",
                    )
                raise OSError(code, f"inotify_add_watch({directory}): {os.strerror(code)}")
            self._paths[wd] = directory
            if report:
                with contextlib.suppress(OSError):
                    for entry in os.scandir(directory):
                        if entry.is_file() and self.filter(entry.path):
                            self._pending.add(entry.path)

    def wait(self, timeout: float) -> set[str]:
        if self._pending:
            changes, self._pending = self._pending, set()
            return changes
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return set()
        changes = set()
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            changes |= self._parse(data)
        changes |= self._pending
        self._pending = set()
        return changes

    def _parse(self, data: bytes) -> set[str]:
        changes: set[str] = set()
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            raw_name = data[offset:offset + length].rstrip(b"\0")
            offset += length
            if mask & _IN_Q_OVERFLOW:
                # Events were lost: we cannot know what changed, so report the roots (the
                # reloader restarts on any change) and keep going.
                changes.update(self.roots)
                continue
            directory = self._paths.get(wd)
            if directory is None:
                continue
            if mask & _IN_IGNORED:  # the watch is gone (directory deleted or moved away)
                self._paths.pop(wd, None)
                continue
            if not raw_name:
                continue  # an event about the watched directory itself
            path = os.path.join(directory, os.fsdecode(raw_name))
            if mask & _IN_ISDIR:
                if mask & (_IN_CREATE | _IN_MOVED_TO) and self.filter.dir_wanted(path):
                    self._watch_tree(path, report=True)
                elif mask & (_IN_DELETE | _IN_MOVED_FROM) and not self.filter.excluded(path):
                    # A package directory went away: code the app imports may be gone.
                    changes.add(path)
                continue
            if self.filter(path):
                changes.add(path)
        return changes

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


# --------------------------------------------------------------------------- watchfiles


class WatchfilesWatcher(Watcher):
    """The optional ``watchfiles`` package (Rust ``notify``): event driven on every OS."""

    name = "watchfiles"

    def __init__(self, roots: Sequence[str], path_filter: PathFilter) -> None:
        super().__init__(roots, path_filter)
        import watchfiles  # optional: imported only when this watcher is chosen

        self._stop = threading.Event()
        self._timeout_ms = 250
        path_ok = self.filter

        def keep(_change: object, path: str) -> bool:
            # New directories too: files created in them before the OS watch was added
            # produce no event of their own, so _next_batch() scans them.
            return path_ok(path) or (os.path.isdir(path) and path_ok.dir_wanted(path))

        self._iterator: Iterator[set[tuple[Any, str]]] = iter(
            watchfiles.watch(
                *self.roots,
                watch_filter=keep,
                debounce=400,
                step=20,
                stop_event=self._stop,
                rust_timeout=self._timeout_ms,
                yield_on_timeout=True,
                raise_interrupt=False,
            )
        )
        # The generator starts watching only when first advanced: do it now, or changes
        # made between construction and the first wait() would be lost.
        self._pending: set[str] = self._next_batch()

    def _next_batch(self) -> set[str]:
        try:
            batch = next(self._iterator)
        except StopIteration:
            return set()
        changes: set[str] = set()
        for _change, path in batch:
            if not os.path.isdir(path):
                changes.add(path)
                continue
            for directory in _walk_dirs(path, self.filter):
                with contextlib.suppress(OSError):
                    changes.update(
                        entry.path for entry in os.scandir(directory)
                        if entry.is_file() and self.filter(entry.path)
                    )
        return changes

    def wait(self, timeout: float) -> set[str]:
        # watchfiles yields at the latest every rust_timeout (an empty set), so one next()
        # blocks about 0.25 s at most; loop until our own timeout is used up.
        if self._pending:
            changes, self._pending = self._pending, set()
            return changes
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            changes = self._next_batch()
            if changes or time.monotonic() >= deadline:
                return changes
        return set()

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- polling


class PollingWatcher(Watcher):
    """Compares ``(mtime_ns, size)`` snapshots every *interval* seconds, sleeping between.

    The last resort: a scan walks the whole tree, so the interval trades latency for CPU.
    """

    name = "polling"

    def __init__(
        self, roots: Sequence[str], path_filter: PathFilter, interval: float = 0.5
    ) -> None:
        super().__init__(roots, path_filter)
        self.interval = interval
        self._wake = threading.Event()
        self._snapshot = self._scan()
        self._next_scan = time.monotonic() + interval

    def _scan(self) -> dict[str, tuple[int, int]]:
        snapshot: dict[str, tuple[int, int]] = {}
        for root in self.roots:
            for directory in _walk_dirs(root, self.filter):
                with contextlib.suppress(OSError):
                    for entry in os.scandir(directory):
                        if not self.filter(entry.path):
                            continue
                        with contextlib.suppress(OSError):
                            if entry.is_file():
                                st = entry.stat()
                                snapshot[entry.path] = (st.st_mtime_ns, st.st_size)
        return snapshot

    def wait(self, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_scan:
                current = self._scan()
                self._next_scan = time.monotonic() + self.interval
                before = self._snapshot
                self._snapshot = current
                changed = {p for p, sig in current.items() if before.get(p) != sig}
                changed |= before.keys() - current.keys()
                if changed:
                    return changed
                continue
            if now >= deadline:
                return set()
            if self._wake.wait(min(self._next_scan, deadline) - now):
                return set()

    def close(self) -> None:
        self._wake.set()


# --------------------------------------------------------------------------- choice


def make_watcher(
    roots: Sequence[str], path_filter: PathFilter, prefer: str | None = None
) -> Watcher:
    """The best watcher available: inotify (Linux), then watchfiles, then polling.

    *prefer* (``"inotify"``, ``"watchfiles"``, ``"polling"``; also the environment variable
    ``POUNCE_RELOAD_WATCHER``) forces one, for tests and for file systems where events do
    not arrive (network mounts, some container volumes), which is where polling is needed.
    """
    prefer = prefer or os.environ.get("POUNCE_RELOAD_WATCHER") or None
    missing = [root for root in roots if not Path(root).is_dir()]
    if missing:
        raise OSError(errno.ENOENT, f"--reload-dir {missing[0]!r} is not a directory")
    order = [prefer] if prefer else ["inotify", "watchfiles", "polling"]
    last_error: Exception | None = None
    for kind in order:
        try:
            if kind == "inotify":
                return InotifyWatcher(roots, path_filter)
            if kind == "watchfiles":
                return WatchfilesWatcher(roots, path_filter)
            if kind == "polling":
                return PollingWatcher(roots, path_filter)
        except (OSError, ImportError) as exc:
            if kind == "inotify" and getattr(exc, "errno", None) == errno.ENOSPC:
                logger.warning("%s; falling back", exc)
            last_error = exc
            continue
        raise ValueError(f"unknown watcher {kind!r}; use inotify, watchfiles or polling")
    assert last_error is not None
    raise last_error
