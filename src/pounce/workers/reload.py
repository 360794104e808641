"""Loading the application, and loading it again for a rolling reload.

A rolling reload must run the *current* code on disk, so the modules that belong to the
application are dropped from ``sys.modules`` before it is imported again. Which modules belong
to it: the app's own module, plus every module first imported after the server started (the
``baseline``) whose file lives under the application's directories and not in an installed
package (site-packages, the standard library) or in Pounce itself. Libraries stay imported:
reloading them would break objects other threads still hold.

When the app was passed as an object rather than an import string there is nothing to
re-import; a reload then restarts the workers (and their lifespans) with the same object.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import sysconfig
import threading
from typing import TYPE_CHECKING

from pounce.importer import load_app

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig

logger = logging.getLogger("pounce.error")

# Imports mutate process-global state (sys.modules, sys.path); serialise the loader's own.
_IMPORT_LOCK = threading.Lock()


def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    return tuple(os.path.realpath(root) + os.sep for root in roots)


class AppLoader:
    """Imports the app once at start-up, and freshly on every rolling reload."""

    def __init__(self, config: ServerConfig, app: ASGIApp | None = None) -> None:
        self.config = config
        self._app_object = app
        self._baseline = frozenset(sys.modules)
        self.reloadable = app is None and isinstance(config.app, str)

    def load(self) -> ASGIApp:
        with _IMPORT_LOCK:
            target: object = self._app_object if self._app_object is not None else self.config
            return load_app(target, config=self.config)

    def reload(self) -> ASGIApp:
        """Import the application's current code; raises ``AppImportError`` on failure."""
        if not self.reloadable:
            return self.load()
        with _IMPORT_LOCK:
            for name in self.app_modules():
                sys.modules.pop(name, None)
            importlib.invalidate_caches()
            return load_app(self.config, config=self.config)

    def app_modules(self) -> list[str]:
        """Names of the modules that a reload drops and imports again."""
        app_string = self.config.app if isinstance(self.config.app, str) else ""
        own = app_string.partition(":")[0].strip()
        dirs = {os.path.realpath(os.getcwd())}
        if self.config.app_dir:
            dirs.add(os.path.realpath(self.config.app_dir))
        roots = tuple(d + os.sep for d in dirs)
        installed = _installed_roots()
        names = []
        for name, module in list(sys.modules.items()):
            if name == own:
                names.append(name)
                continue
            if name in self._baseline or name == "pounce" or name.startswith("pounce."):
                continue
            file = getattr(module, "__file__", None)
            if not isinstance(file, str):
                continue
            path = os.path.realpath(file)
            if (
                path.startswith(roots)
                and not path.startswith(installed)
                and "site-packages" not in path
            ):
                names.append(name)
        return names
