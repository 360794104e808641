"""Loading applications from import strings, factories and objects."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pounce.config import ServerConfig
from pounce.errors import AppImportError, StartupError
from pounce.importer import ASGI2Adapter, detect_interface, load_app


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Give each test its own sys.path and forget modules it imported."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def make_module(directory: Path, name: str, source: str) -> None:
    path = directory.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == directory:
            break
        (parent / "__init__.py").touch()
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    importlib.invalidate_caches()


ASGI3_SOURCE = """
async def app(scope, receive, send):
    await send({"type": "seen", "scope": scope})

class Holder:
    app = app
    class Inner:
        app = app

def create_app():
    return app

def make_none():
    return None

def explode():
    raise RuntimeError("factory exploded")

VALUE = 42

def wsgi(environ, start_response):
    return []
"""


def config(**kwargs: Any) -> ServerConfig:
    return ServerConfig(**kwargs)


async def call(app: Any) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http"}, receive, send)
    return sent


def test_module_attribute(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_basic", ASGI3_SOURCE)
    app = load_app(config(app="imp_basic:app"))
    assert app is sys.modules["imp_basic"].app


def test_dotted_attribute_path(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_dotted", ASGI3_SOURCE)
    app = load_app(config(app="imp_dotted:Holder.Inner.app"))
    assert app is sys.modules["imp_dotted"].app


def test_package_module(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_pkg.web.main", ASGI3_SOURCE)
    app = load_app(config(app="imp_pkg.web.main:app"))
    assert app.__module__ == "imp_pkg.web.main"


def test_factory_flag(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_factory", ASGI3_SOURCE)
    app = load_app(config(app="imp_factory:create_app", factory=True))
    assert app is sys.modules["imp_factory"].app


def test_factory_call_syntax(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_factory2", ASGI3_SOURCE)
    app = load_app(config(app="imp_factory2:create_app()"))
    assert app is sys.modules["imp_factory2"].app


def test_factory_returning_none(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_none", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match=r"make_none\(\) returned None"):
        load_app(config(app="imp_none:make_none()"))


def test_factory_raising_shows_traceback(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_explode", ASGI3_SOURCE)
    with pytest.raises(AppImportError) as info:
        load_app(config(app="imp_explode:explode", factory=True))
    assert "RuntimeError: factory exploded" in str(info.value)
    assert info.value.details is not None
    assert "imp_explode.py" in info.value.details


def test_factory_flag_on_non_callable(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_value", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match="not a factory"):
        load_app(config(app="imp_value:VALUE", factory=True))


def test_zero_argument_callable_hints_at_factory(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_hint", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match=r"add --factory or write 'imp_hint:create_app\(\)'"):
        load_app(config(app="imp_hint:create_app"))


def test_not_callable(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_nc", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match="imp_nc:VALUE is a int, not an ASGI application"):
        load_app(config(app="imp_nc:VALUE"))


def test_wsgi_app_is_explained(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_wsgi", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match="like a WSGI application"):
        load_app(config(app="imp_wsgi:wsgi"))


# --------------------------------------------------------------------------- failures


def test_module_not_found() -> None:
    with pytest.raises(AppImportError) as info:
        load_app(config(app="imp_does_not_exist:app"))
    message = str(info.value)
    assert "no module named 'imp_does_not_exist'" in message
    assert "--app-dir" in message
    assert info.value.details is None


def test_parent_package_not_found() -> None:
    with pytest.raises(AppImportError, match="no module named 'imp_nopkg'"):
        load_app(config(app="imp_nopkg.sub:app"))


def test_import_error_inside_module_is_not_reported_as_missing_module(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_inner", "import imp_missing_dependency\napp = None\n")
    with pytest.raises(AppImportError) as info:
        load_app(config(app="imp_inner:app"))
    message = str(info.value)
    assert "raised ModuleNotFoundError: No module named 'imp_missing_dependency'" in message
    assert "imp_inner.py:1" in message
    assert "--app-dir" not in message
    details = info.value.details
    assert details is not None
    assert 'imp_inner.py", line 1' in details
    assert "importlib" not in details  # internal frames are trimmed


def test_exception_inside_module(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_raise", "x = 1\nraise RuntimeError('boom at import')\n")
    with pytest.raises(AppImportError, match="RuntimeError: boom at import") as info:
        load_app(config(app="imp_raise:app"))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_syntax_error_inside_module(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_syntax", "def broken(:\n    pass\n")
    with pytest.raises(AppImportError, match="SyntaxError") as info:
        load_app(config(app="imp_syntax:app"))
    assert info.value.details is not None and "imp_syntax.py" in info.value.details


def test_missing_attribute_suggests_close_matches(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_attr", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match="has no attribute 'ap'; did you mean 'app'"):
        load_app(config(app="imp_attr:ap"))


def test_missing_nested_attribute(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_attr2", ASGI3_SOURCE)
    with pytest.raises(AppImportError, match="imp_attr2:Holder has no attribute 'ap'"):
        load_app(config(app="imp_attr2:Holder.ap"))


def test_missing_attribute_lists_names_when_nothing_is_close(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_attr3", "application_object = 1\n")
    with pytest.raises(AppImportError, match="it has: application_object"):
        load_app(config(app="imp_attr3:zzz"))


@pytest.mark.parametrize("target", ["main", "main:", ":app", "main:app(1)", "main:a-b", "1x:app"])
def test_invalid_import_strings(target: str) -> None:
    with pytest.raises(AppImportError, match="invalid application"):
        load_app(config(app=target))


def test_no_app_configured() -> None:
    with pytest.raises(AppImportError, match="no application given") as info:
        load_app(ServerConfig())
    assert isinstance(info.value, StartupError)


# --------------------------------------------------------------------------- app_dir


def test_app_dir_is_put_first_on_sys_path(tmp_path: Path) -> None:
    make_module(tmp_path / "srcdir", "imp_appdir", ASGI3_SOURCE)
    load_app(config(app="imp_appdir:app", app_dir=str(tmp_path / "srcdir")))
    assert sys.path[0] == str(tmp_path / "srcdir")


def test_relative_app_dir(tmp_path: Path) -> None:
    make_module(tmp_path / "rel", "imp_rel", ASGI3_SOURCE)
    load_app(config(app="imp_rel:app", app_dir="rel"))
    assert sys.path[0] == str(tmp_path / "rel")


def test_app_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(AppImportError, match="is not a directory"):
        load_app(config(app="x:app", app_dir=str(tmp_path / "missing")))


# --------------------------------------------------------------------------- interfaces


class ASGI2Class:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "asgi2", "scope": self.scope})


def asgi2_function(scope: dict[str, Any]) -> Any:
    async def instance(receive: Any, send: Any) -> None:
        await send({"type": "asgi2-fn"})

    return instance


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "asgi3-instance"})


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "asgi3"})


def test_detect_interface() -> None:
    assert detect_interface(ASGI2Class) == "asgi2"
    assert detect_interface(asgi2_function) == "asgi2"
    assert detect_interface(asgi3_function) == "asgi3"
    assert detect_interface(ASGI3Instance()) == "asgi3"
    assert detect_interface(print) == "asgi3"  # unknown signature: assume ASGI 3


def test_asgi2_class_is_adapted() -> None:
    app = load_app(ASGI2Class)
    assert isinstance(app, ASGI2Adapter)
    sent = asyncio.run(call(app))
    assert sent == [{"type": "asgi2", "scope": {"type": "http"}}]


def test_asgi2_function_is_adapted() -> None:
    app = load_app(asgi2_function)
    assert asyncio.run(call(app)) == [{"type": "asgi2-fn"}]


def test_asgi3_objects_are_returned_unchanged() -> None:
    instance = ASGI3Instance()
    assert load_app(instance) is instance
    assert load_app(asgi3_function) is asgi3_function
    assert asyncio.run(call(load_app(instance))) == [{"type": "asgi3-instance"}]


def test_forced_interfaces() -> None:
    forced: object = load_app(asgi2_function, config=config(interface="asgi3"))
    assert forced is asgi2_function
    adapted = load_app(asgi3_function, config=config(interface="asgi2"))
    assert isinstance(adapted, ASGI2Adapter)


def test_factory_object() -> None:
    def factory() -> Any:
        return asgi3_function

    assert load_app(factory, config=config(factory=True)) is asgi3_function


def test_factory_returning_asgi2_is_adapted() -> None:
    assert isinstance(load_app(lambda: ASGI2Class, config=config(factory=True)), ASGI2Adapter)


def test_asgi2_from_import_string(tmp_path: Path) -> None:
    make_module(
        tmp_path,
        "imp_asgi2",
        """
        class App:
            def __init__(self, scope):
                self.scope = scope
            async def __call__(self, receive, send):
                await send({"type": "from-module"})
        """,
    )
    app = load_app(config(app="imp_asgi2:App"))
    assert asyncio.run(call(app)) == [{"type": "from-module"}]


def test_import_string_with_explicit_config(tmp_path: Path) -> None:
    make_module(tmp_path, "imp_explicit", ASGI3_SOURCE)
    app = load_app("imp_explicit:create_app", config=config(factory=True))
    assert app is sys.modules["imp_explicit"].app


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("main.py:app", "leave out the .py suffix, as in 'main:app'"),
        ("src/main:app", "not a path"),
    ],
)
def test_common_import_string_mistakes(target: str, message: str) -> None:
    with pytest.raises(AppImportError, match=message):
        load_app(config(app=target))


def test_missing_module_names_the_searched_directory(tmp_path: Path) -> None:
    with pytest.raises(AppImportError, match=f"in {tmp_path} or on sys.path"):
        load_app(config(app="imp_not_here:app"))


def test_asgi2_with_optional_extra_parameter() -> None:
    def app(scope: Any, debug: bool = False) -> Any:
        return asgi2_function(scope)

    assert detect_interface(app) == "asgi2"
    assert isinstance(load_app(app), ASGI2Adapter)


def test_asgi3_with_defaults_is_not_mistaken_for_asgi2() -> None:
    async def app(scope: Any, receive: Any = None, send: Any = None) -> None:
        return None

    assert detect_interface(app) == "asgi3"
