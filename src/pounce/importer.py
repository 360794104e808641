"""Turn ``"module:attribute"`` into a running ASGI 3 application.

Loading an application is where most first-run failures happen, and the
interesting part is telling the user *which* failure it is:

* the module is not importable at all (wrong name, wrong directory) -- say so
  and show where Python looked;
* the module exists but raised while being imported (including an
  ``ImportError`` for one of *its* dependencies) -- that is a bug in the user's
  code, so show its traceback rather than claiming the module is missing;
* the attribute is missing -- suggest the closest names;
* the object is not an ASGI 3 application -- a factory that was not called, a
  WSGI app, an ASGI 2 "double callable" (adapted automatically).

Import strings: ``module:attr``, ``package.module:attr.sub`` (dotted attribute
path) and ``module:factory()`` (call a factory, like ``factory=True``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, cast

from pounce.asgi.types import ASGIApp, Receive, Scope, Send
from pounce.config.model import ServerConfig
from pounce.errors import AppImportError

__all__ = [
    "ASGI2Adapter",
    "ASGI3App",
    "import_from_string",
    "load_app",
]

ASGI3App = ASGIApp
ASGI2Instance = Callable[[Receive, Send], Awaitable[None]]
ASGI2App = Callable[[Scope], ASGI2Instance]

Interface = Literal["auto", "asgi3", "asgi2"]

_FORMAT_HINT = "use 'module:attribute', e.g. 'main:app' or 'mypkg.web:create_app()'"


class ASGI2Adapter:
    """Serve an ASGI 2 ("double callable") application through the ASGI 3 interface.

    ASGI 2 apps are called with the scope first and return an instance that
    is then awaited with ``receive`` and ``send``; ASGI 3 merged the two calls.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGI2App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)

    def __repr__(self) -> str:
        return f"ASGI2Adapter({self.app!r})"


# --------------------------------------------------------------------------- importing


_INTERNAL_FILES = frozenset({__file__, importlib.__file__})


def _is_internal(filename: str) -> bool:
    """Frames of Pounce's importer and of importlib, which only obscure the user's error."""
    return filename in _INTERNAL_FILES or filename.startswith("<frozen importlib")


def _user_traceback(exc: BaseException) -> str:
    """Format ``exc`` without the frames of Pounce and importlib above the user's code."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [frame for frame in te.stack if not _is_internal(frame.filename)]
    )
    return "".join(te.format()).rstrip()


def _innermost_user_location(tb: TracebackType | None) -> str:
    location = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not _is_internal(filename):
            location = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return location


def _import_module(module_name: str, import_string: str, search_dir: str | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        # The target module itself, or one of its parent packages, is missing:
        # the import string (or the directory) is wrong.  Any other missing
        # module was imported *by* the user's code.
        if missing == module_name or module_name.startswith(missing + "."):
            where = f"in {search_dir} or on sys.path" if search_dir else "on sys.path"
            raise AppImportError(
                f"cannot import {import_string!r}: no module named {missing!r} {where}; "
                "check the module name, or point --app-dir at the directory that contains it"
            ) from None
        raise _inner_error(exc, import_string) from exc
    except Exception as exc:
        raise _inner_error(exc, import_string) from exc


def _inner_error(exc: BaseException, import_string: str) -> AppImportError:
    where = _innermost_user_location(exc.__traceback__)
    at = f" at {where}" if where else ""
    summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return AppImportError(
        f"importing {import_string!r} raised {summary}{at}; "
        "the error is in the application's code (traceback above)",
        details=_user_traceback(exc),
    )


def _public_names(obj: object) -> list[str]:
    return [name for name in dir(obj) if not name.startswith("_")]


def import_from_string(import_string: str, *, search_dir: str | None = None) -> tuple[Any, bool]:
    """Import ``module:attr.path`` or ``module:factory()``.

    Returns ``(object, call_it)`` where ``call_it`` is true for the
    ``factory()`` form.  ``search_dir`` is only used in error messages.
    """
    module_name, sep, attr_path = import_string.strip().partition(":")
    if "/" in module_name or "\\" in module_name:
        raise AppImportError(
            f"invalid application {import_string!r}: give a module name, not a path -- "
            "use dots between packages, and --app-dir for the directory it lives in"
        )
    if module_name.endswith(".py"):
        raise AppImportError(
            f"invalid application {import_string!r}: leave out the .py suffix, "
            f"as in '{module_name.removesuffix('.py')}:{attr_path or 'app'}'"
        )
    if not sep or not module_name or not attr_path:
        raise AppImportError(f"invalid application {import_string!r}: {_FORMAT_HINT}")
    call_it = False
    if attr_path.endswith(")"):
        if not attr_path.endswith("()"):
            raise AppImportError(
                f"invalid application {import_string!r}: a factory is called without "
                "arguments, as 'module:factory()'; read settings inside the factory instead"
            )
        attr_path = attr_path[:-2]
        call_it = True
    parts = attr_path.split(".")
    if not all(part.isidentifier() for part in parts) or not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        raise AppImportError(f"invalid application {import_string!r}: {_FORMAT_HINT}")

    obj = _import_module(module_name, import_string, search_dir)
    owner_desc = f"module {module_name!r}"
    for index, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            candidates = _public_names(obj)
            close = difflib.get_close_matches(part, candidates, n=3, cutoff=0.6)
            if close:
                hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
            elif candidates:
                shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
                hint = f"it has: {shown}"
            else:
                hint = "it defines no public names"
            raise AppImportError(
                f"cannot load {import_string!r}: {owner_desc} has no attribute {part!r}; {hint}"
            ) from None
        owner_desc = f"{module_name}:{'.'.join(parts[: index + 1])}"
    return obj, call_it


# --------------------------------------------------------------------------- interface


def _positional_arity(obj: Any) -> tuple[int, int] | None:
    """``(required, total)`` positional parameters of ``obj``; ``None`` if unknown or variadic."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    required = total = 0
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            total += 1
            if param.default is inspect.Parameter.empty:
                required += 1
    return required, total


def detect_interface(app: Any) -> Literal["asgi3", "asgi2"]:
    """Guess whether ``app`` is ASGI 3 or an ASGI 2 double callable.

    A class whose constructor takes only the scope, or any callable whose
    only required positional argument is the scope (and that could not take
    three), is ASGI 2.  Everything else -- including callables whose
    signature cannot be inspected -- is treated as ASGI 3, the current spec.
    """
    arity = _positional_arity(app)
    if arity is not None and arity[0] == 1 and arity[1] < 3:
        return "asgi2"
    return "asgi3"


def _describe(app: Any) -> str:
    return getattr(app, "__qualname__", None) or type(app).__name__


def _check_callable(app: Any, name: str, interface: Interface, factory: bool) -> ASGI3App:
    if not callable(app):
        raise AppImportError(
            f"{name} is a {type(app).__name__}, not an ASGI application; "
            "point APP at the application object (module:attribute)"
        )
    if interface == "asgi2":
        return ASGI2Adapter(cast(ASGI2App, app))
    if interface == "asgi3":
        return cast(ASGI3App, app)
    arity = _positional_arity(app)
    if arity == (0, 0):
        if factory:
            raise AppImportError(
                f"{name} returned a callable that takes no arguments; the factory must "
                "return the ASGI application itself"
            )
        raise AppImportError(
            f"{name} takes no arguments, so it is not an ASGI application; if it is a "
            f"factory that returns the app, add --factory or write '{name}()'"
        )
    if arity == (2, 2):
        raise AppImportError(
            f"{name} takes two arguments, like a WSGI application (environ, start_response); "
            "Pounce serves ASGI applications -- wrap it in a WSGI-to-ASGI adapter (e.g. a2wsgi)"
        )
    if detect_interface(app) == "asgi2":
        return ASGI2Adapter(cast(ASGI2App, app))
    return cast(ASGI3App, app)


def _insert_app_dir(app_dir: str) -> str:
    """Put ``app_dir`` first on ``sys.path`` (as ``python -m`` would) and return it."""
    path = os.path.abspath(app_dir)
    if not os.path.isdir(path):
        raise AppImportError(
            f"--app-dir {app_dir!r} is not a directory; give the directory that contains "
            "the application's module"
        )
    if not sys.path or sys.path[0] != path:
        sys.path.insert(0, path)
    return path


def load_app(
    target: ServerConfig | str | object, *, config: ServerConfig | None = None
) -> ASGI3App:
    """Load the application and return it as an ASGI 3 callable.

    ``target`` is a :class:`ServerConfig` (its ``app`` import string is
    used), an import string, or an already-imported application object.
    ``config`` supplies ``factory``, ``app_dir`` and ``interface`` when
    ``target`` is not itself the config.  Raises :class:`AppImportError` with
    a message that says what to fix.
    """
    if isinstance(target, ServerConfig):
        config = target
        if config.app is None:
            raise AppImportError(
                "no application given; pass APP as module:attribute (e.g. 'main:app') "
                "or set app in pounce.toml"
            )
        target = config.app
    config = config or ServerConfig()
    factory = config.factory
    if isinstance(target, str):
        search_dir = _insert_app_dir(config.app_dir)
        name = target.strip()
        app, call_it = import_from_string(name, search_dir=search_dir)
        factory = factory or call_it
        name = name.removesuffix("()")
    else:
        app = target
        name = _describe(app)

    if factory:
        if not callable(app):
            raise AppImportError(
                f"{name} is a {type(app).__name__}, not a factory; drop --factory if it is "
                "the application itself"
            )
        try:
            app = app()
        except Exception as exc:
            raise AppImportError(
                f"calling the factory {name}() raised "
                f"{traceback.format_exception_only(type(exc), exc)[-1].strip()}; "
                "the error is in the application's code (traceback above)",
                details=_user_traceback(exc),
            ) from exc
        if app is None:
            raise AppImportError(
                f"the factory {name}() returned None; make it return the application"
            )
        name = f"{name}()"
    return _check_callable(app, name, config.interface, factory=factory)
