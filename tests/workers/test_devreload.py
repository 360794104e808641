"""Dev reload (``--reload``): the watchers, and the reloader end to end in a subprocess."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import PounceSubprocess
from tests.workers.support import get, wait_for

from pounce.workers.watchers import (
    InotifyWatcher,
    PathFilter,
    PollingWatcher,
    Watcher,
    WatchfilesWatcher,
    make_watcher,
)

KINDS = ["inotify", "polling", "watchfiles"]


def _make(kind: str, root: Path, **filter_options: tuple[str, ...]) -> Watcher:
    if kind == "inotify" and not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux only")
    if kind == "watchfiles" and importlib.util.find_spec("watchfiles") is None:
        pytest.skip("watchfiles is not installed")
    path_filter = PathFilter([str(root)], **filter_options)
    if kind == "polling":
        return PollingWatcher([str(root)], path_filter, interval=0.05)
    if kind == "watchfiles":
        return WatchfilesWatcher([str(root)], path_filter)
    return InotifyWatcher([str(root)], path_filter)


def _changes_until(watcher: Watcher, expected: str, timeout: float = 5.0) -> set[str]:
    """Collect changes until *expected* shows up or the deadline passes."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while expected not in seen and time.monotonic() < deadline:
        seen |= watcher.wait(0.2)
    return seen


# --------------------------------------------------------------------------- filter


def test_filter_defaults(tmp_path: Path) -> None:
    f = PathFilter([str(tmp_path)])
    assert f(str(tmp_path / "app.py"))
    assert f(str(tmp_path / "pkg" / "mod.py"))
    assert not f(str(tmp_path / "notes.txt"))
    assert not f(str(tmp_path / "mod.pyc"))
    assert not f(str(tmp_path / "__pycache__" / "mod.py"))
    assert not f(str(tmp_path / ".git" / "x.py"))
    assert not f(str(tmp_path / ".venv" / "lib" / "x.py"))
    assert not f(str(tmp_path / "app.py~"))
    assert not f("/elsewhere/app.py")


def test_filter_includes_excludes(tmp_path: Path) -> None:
    f = PathFilter([str(tmp_path)], ("*.py", "*.html", ".env"), ("tests", "gen/*.py"))
    assert f(str(tmp_path / "t" / "page.html"))
    assert f(str(tmp_path / ".env"))  # an explicit include beats the default ".*"
    assert not f(str(tmp_path / "tests" / "test_x.py"))
    assert not f(str(tmp_path / "gen" / "out.py"))
    assert f(str(tmp_path / "src" / "gen" / "ok.py"))  # "gen/*.py" is relative to the root


def test_filter_ignores_hidden_components_above_the_root(tmp_path: Path) -> None:
    root = tmp_path / ".hidden" / "project"
    assert PathFilter([str(root)])(str(root / "app.py"))


# --------------------------------------------------------------------------- watchers


@pytest.mark.parametrize("kind", KINDS)
def test_watcher_sees_a_modified_file(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "app.py"
    target.write_text("x = 1\n")
    with _make(kind, tmp_path) as watcher:
        assert watcher.wait(0.05) == set() or kind == "watchfiles"
        target.write_text("x = 22\n")
        assert str(target) in _changes_until(watcher, str(target))


@pytest.mark.parametrize("kind", KINDS)
def test_watcher_sees_files_in_new_directories(kind: str, tmp_path: Path) -> None:
    with _make(kind, tmp_path) as watcher:
        nested = tmp_path / "pkg" / "sub"
        nested.mkdir(parents=True)
        target = nested / "mod.py"
        target.write_text("y = 1\n")
        assert str(target) in _changes_until(watcher, str(target))
        # and the new directory stays watched
        target.write_text("y = 22\n")
        watcher.wait(0.05)
        changed = tmp_path / "pkg" / "sub" / "mod.py"
        changed.write_text("y = 333\n")
        assert str(changed) in _changes_until(watcher, str(changed))


@pytest.mark.parametrize("kind", KINDS)
def test_watcher_ignores_excluded_files(kind: str, tmp_path: Path) -> None:
    (tmp_path / "__pycache__").mkdir()
    with _make(kind, tmp_path) as watcher:
        (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
        (tmp_path / "notes.txt").write_text("n")
        (tmp_path / ".app.py.swp").write_text("s")
        marker = tmp_path / "marker.py"
        marker.write_text("m = 1\n")
        seen = _changes_until(watcher, str(marker))
    assert seen == {str(marker)}


@pytest.mark.parametrize("kind", ["inotify", "polling"])
def test_idle_watcher_uses_no_cpu(kind: str, tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"m{i}.py").write_text("")
    with _make(kind, tmp_path) as watcher:
        if isinstance(watcher, PollingWatcher):
            watcher.interval = 0.1
        cpu = time.process_time()
        started = time.monotonic()
        assert watcher.wait(0.5) == set()
        elapsed = time.monotonic() - started
        used = time.process_time() - cpu
    assert 0.4 <= elapsed < 2.0
    assert used < 0.25 * elapsed, f"{kind} used {used:.3f}s CPU in {elapsed:.3f}s"


def test_make_watcher_prefers_inotify_and_honours_a_choice(tmp_path: Path) -> None:
    if sys.platform.startswith("linux"):
        with make_watcher([str(tmp_path)], PathFilter([str(tmp_path)])) as watcher:
            assert watcher.name == "inotify"
    with make_watcher([str(tmp_path)], PathFilter([str(tmp_path)]), "polling") as watcher:
        assert watcher.name == "polling"
    with pytest.raises(OSError, match="not a directory"):
        make_watcher([str(tmp_path / "nope")], PathFilter([str(tmp_path)]))


# --------------------------------------------------------------------------- end to end

APP = """\
BODY = {body!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


class Reloader(PounceSubprocess):
    """``python -m pounce devapp:app --reload`` in a subprocess, its stderr collected."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        super().__init__(
            ["devapp:app", "--reload", "--reload-dir", str(root), "--app-dir", str(root),
             "--port", "0", "--reload-delay", "0.05", "--no-access-log", *extra],
            cwd=root,
        )

    def address(self) -> tuple[str, int]:
        pattern = re.compile(r"running on http://127\.0\.0\.1:(\d+)")
        assert wait_for(lambda: pattern.search(self.log) is not None, 20), self.log
        match = pattern.search(self.log)
        assert match is not None
        return "127.0.0.1", int(match.group(1))

    def body(self, address: tuple[str, int]) -> bytes | None:
        with contextlib.suppress(OSError):
            return get(address, timeout=2)[1]
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        finally:
            self.kill()
            self.join_reader()


@pytest.fixture
def reloader_factory(tmp_path: Path) -> Iterator[list[Reloader]]:
    started: list[Reloader] = []
    yield started
    for r in started:
        r.stop()


def _start(
    started: list[Reloader], root: Path, *extra: str
) -> tuple[Reloader, tuple[str, int]]:
    """Start a reloader on an app answering ``one``; return it once the first child serves."""
    (root / "devapp.py").write_text(APP.format(body=b"one"))
    r = Reloader(root, *extra)
    started.append(r)
    address = r.address()
    assert wait_for(lambda: r.body(address) == b"one", 20), r.log
    return r, address


@pytest.mark.parametrize("extra", [(), ("--workers", "2")], ids=["1-worker", "2-workers"])
def test_edit_then_syntax_error_then_fix(
    reloader_factory: list[Reloader], tmp_path: Path, extra: tuple[str, ...]
) -> None:
    r, address = _start(reloader_factory, tmp_path, *extra)

    (tmp_path / "devapp.py").write_text(APP.format(body=b"two"))
    assert wait_for(lambda: r.body(address) == b"two", 15), r.log

    (tmp_path / "devapp.py").write_text("def broken(:\n")
    assert wait_for(lambda: "waiting for file changes" in r.log, 15), r.log
    assert "SyntaxError" in r.log
    assert r.proc.poll() is None, "the reloader must keep running"

    (tmp_path / "devapp.py").write_text(APP.format(body=b"three"))
    assert wait_for(lambda: r.body(address) == b"three", 15), r.log
    assert r.stop() == 0
    assert "Stopped reloader process" in r.log


def test_changes_of_other_files_do_not_restart(
    reloader_factory: list[Reloader], tmp_path: Path
) -> None:
    r, _ = _start(reloader_factory, tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "trigger.py").write_text("")
    assert wait_for(lambda: "Detected changes in 'trigger.py'" in r.log, 15), r.log
    assert "readme.txt" not in r.log


def test_child_exits_when_the_reloader_is_killed(
    reloader_factory: list[Reloader], tmp_path: Path
) -> None:
    r, address = _start(reloader_factory, tmp_path)
    r.proc.kill()
    r.proc.wait(5)
    # The child noticed that its lifeline closed and stopped: nothing answers any more.
    assert wait_for(lambda: r.body(address) is None, 15), r.log
