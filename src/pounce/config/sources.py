"""Where configuration comes from, and which source wins.

Sources, from lowest to highest precedence:

1. defaults (the :class:`~pounce.config.model.ServerConfig` field defaults);
2. a config file: ``--config FILE`` if given (it must exist), otherwise
   ``pounce.toml`` in the working directory, otherwise the ``[tool.pounce]``
   table of ``pyproject.toml``.  Keys may be spelt ``timeout-keep-alive`` or
   ``timeout_keep_alive``.  Having both ``pounce.toml`` and ``[tool.pounce]`` is
   an error, because silently preferring one leaves the other looking active;
3. the environment: ``POUNCE_<OPTION>`` for every option, plus the variables
   hosting platforms set -- ``PORT``, ``WEB_CONCURRENCY`` (workers) and
   ``FORWARDED_ALLOW_IPS`` -- which yield to the ``POUNCE_`` spelling.  ``PORT``
   also yields to any explicit ``bind``/``uds``/``fd``, because platforms set it
   whether or not the command line already says where to listen.  List options
   are comma-separated; empty variables count as unset;
4. command-line flags (only flags actually given).

A later source replaces a value entirely -- lists are not concatenated -- so
what ``pounce config show`` prints is what runs.

``--env-file`` (or ``env_file`` from the file or ``POUNCE_ENV_FILE``) is loaded
into the environment *before* step 3, so variables in it configure Pounce as
well as the application.  Variables already set in the real environment win
over the file, as with other dotenv loaders: a deployment can always override
a checked-in ``.env``.

Every effective value is recorded with its source ("default", "pounce.toml",
"env POUNCE_PORT", "cli --port"), and a :class:`ConfigError` raised for a bad
value says which source supplied it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pounce.config.errors import ConfigError
from pounce.config.model import FIELD_DOCS, ServerConfig, check_option_name

__all__ = [
    "LoadedConfig",
    "find_config_file",
    "load_config",
    "load_env_file",
    "parse_dotenv",
    "read_config_file",
]

#: Variables set by hosting platforms, mapped to the option they configure.
PLATFORM_ENV: Final = {
    "PORT": "port",
    "WEB_CONCURRENCY": "workers",
    "FORWARDED_ALLOW_IPS": "forwarded_allow_ips",
}

_ENV_KEY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The merged configuration and, for every option, where its value came from."""

    config: ServerConfig
    sources: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None

    def source_of(self, name: str) -> str:
        """The source of option ``name`` ("default", "cli --port", ...)."""
        return self.sources.get(name, "default")


# --------------------------------------------------------------------------- config files


def read_config_file(path: Path, *, label: str | None = None) -> dict[str, object]:
    """Read Pounce options from a TOML file.

    For a file named ``pyproject.toml`` the options are the ``[tool.pounce]``
    table; for any other file they are the top-level keys.  Keys are
    normalised to field names; unknown keys raise :class:`ConfigError`.
    """
    label = label or str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found; check the path given to --config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label} is not valid TOML ({exc}); fix the file") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        table = tool.get("pounce", {}) if isinstance(tool, dict) else {}
    else:
        table = data
    if not isinstance(table, dict):
        raise ConfigError(f"{label}: [tool.pounce] must be a table of options")
    values: dict[str, object] = {}
    for key, value in table.items():
        try:
            name = check_option_name(key)
        except ConfigError as exc:
            raise exc.with_source(label) from None
        if name in values:
            raise ConfigError(
                f"{label} sets {name} twice (as {key!r} and another spelling); keep one"
            )
        values[name] = value
    return values


def _has_tool_pounce(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pyproject.toml is not valid TOML ({exc}); fix the file") from None
    tool = data.get("tool")
    return isinstance(tool, dict) and "pounce" in tool


def find_config_file(cwd: Path) -> tuple[Path, str] | None:
    """Locate the implicit config file in ``cwd``: ``(path, label)`` or ``None``."""
    pounce_toml = cwd / "pounce.toml"
    pyproject = cwd / "pyproject.toml"
    in_pyproject = pyproject.is_file() and _has_tool_pounce(pyproject)
    if pounce_toml.is_file():
        if in_pyproject:
            raise ConfigError(
                "both pounce.toml and [tool.pounce] in pyproject.toml configure Pounce; "
                "keep one of them, or choose explicitly with --config FILE"
            )
        return pounce_toml, "pounce.toml"
    if in_pyproject:
        return pyproject, "pyproject.toml [tool.pounce]"
    return None


# --------------------------------------------------------------------------- dotenv


def _parse_quoted(rest: str, where: str) -> tuple[str, str]:
    """Parse a quoted value at the start of ``rest``; return ``(value, remainder)``."""
    quote = rest[0]
    out: list[str] = []
    i = 1
    while i < len(rest):
        ch = rest[i]
        if ch == quote:
            return "".join(out), rest[i + 1 :]
        if ch == "\\" and quote == '"' and i + 1 < len(rest):
            nxt = rest[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ConfigError(f"{where}: unterminated {quote} quote; values must fit on one line")


def parse_dotenv(text: str, *, filename: str = ".env") -> dict[str, str]:
    """Parse dotenv text: ``KEY=VALUE`` lines, ``#`` comments, optional ``export``.

    Values may be unquoted (a `` #`` starts a comment), single-quoted (taken
    literally) or double-quoted (``\\n``, ``\\t``, ``\\"`` and ``\\\\`` escapes).
    No variable expansion: what is in the file is what the variable holds.
    """
    result: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{filename}, line {lineno}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, rest = stripped.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY_RE.match(key):
            raise ConfigError(f"{where}: expected KEY=VALUE, got {line.strip()!r}")
        rest = rest.strip()
        if rest[:1] in ("'", '"'):
            value, remainder = _parse_quoted(rest, where)
            remainder = remainder.strip()
            if remainder and not remainder.startswith("#"):
                raise ConfigError(
                    f"{where}: unexpected text {remainder!r} after the closing quote"
                )
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        result[key] = value
    return result


def load_env_file(
    path: Path, environ: MutableMapping[str, str], *, override: bool = False
) -> dict[str, str]:
    """Load a dotenv file into ``environ``; return the variables actually set.

    Existing variables are kept unless ``override`` is true, so the real
    environment of a deployment beats a checked-in file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"env file {str(path)!r} not found; check the path given to --env-file",
            option="env_file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read env file {str(path)!r}: {exc}", option="env_file") from None
    applied: dict[str, str] = {}
    for key, value in parse_dotenv(text, filename=str(path)).items():
        if override or key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


# --------------------------------------------------------------------------- merging


def _env_layer(
    environ: Mapping[str, str],
    from_env_file: Mapping[str, str],
    env_file: str | None,
    explicit: Mapping[str, object],
) -> dict[str, tuple[object, str]]:
    def label(var: str) -> str:
        return f"env {var} from {env_file}" if var in from_env_file else f"env {var}"

    layer: dict[str, tuple[object, str]] = {}
    for var, name in PLATFORM_ENV.items():
        value = environ.get(var, "")
        if not value:
            continue
        if name == "port" and any(
            explicit.get(opt) not in (None, (), []) for opt in ("bind", "uds", "fd")
        ):
            continue  # PORT is a platform hint; an explicit address wins
        layer[name] = (value, label(var))
    known = {doc.env: name for name, doc in FIELD_DOCS.items()}
    for var, value in environ.items():
        if not var.startswith("POUNCE_") or not value:
            continue
        known_name = known.get(var)
        if known_name is None:
            # Other POUNCE_* variables may be used internally (by workers) or by
            # tooling, so only an obvious typo of a real option is reported.
            close = _near_miss(var, known)
            if close:
                raise ConfigError(f"unknown environment variable {var}; did you mean {close}?")
            continue
        layer[known_name] = (value, label(var))
    return layer


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance counting an adjacent transposition as one edit."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        row = [i]
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            best = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, prev2[j - 2] + 1)
            row.append(best)
        prev2, prev = prev, row
    return prev[-1]


def _near_miss(var: str, known: Mapping[str, str]) -> str | None:
    """The known variable that ``var`` is a typo of (one or two edits away), if any."""
    allowed = 1 if len(var) <= len("POUNCE_") + 6 else 2
    best: tuple[int, str] | None = None
    for candidate in known:
        distance = _edit_distance(var, candidate)
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None


def _cli_label(name: str, value: object) -> str:
    doc = FIELD_DOCS[name]
    if doc.flag is None:
        return "cli APP"
    if doc.style == "negatable" and value is False:
        return "cli --no-" + doc.flag.removeprefix("--")
    return f"cli {doc.flag}"


def load_config(
    cli_values: Mapping[str, object],
    *,
    environ: MutableMapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: str | Path | None = None,
) -> LoadedConfig:
    """Merge defaults < config file < environment < ``cli_values`` into a config.

    ``cli_values`` maps option names to the values given on the command line
    (only flags actually given).  ``environ`` defaults to :data:`os.environ`
    and receives the variables of ``env_file``.  Raises :class:`ConfigError`,
    naming the source of the offending value.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd

    cli: dict[str, object] = {}
    for key, value in cli_values.items():
        cli[check_option_name(key)] = value

    # 1. config file
    file_values: dict[str, object] = {}
    file_label: str | None = None
    file_path: Path | None = None
    if config_file is not None:
        file_path = Path(config_file)
        if not file_path.is_absolute():
            file_path = cwd / file_path
        file_label = str(config_file)
        if not file_path.is_file():
            raise ConfigError(
                f"config file {str(config_file)!r} not found (looked in {file_path.parent}); "
                "check the path given to --config"
            )
        file_values = read_config_file(file_path, label=file_label)
    else:
        found = find_config_file(cwd)
        if found is not None:
            file_path, file_label = found
            file_values = read_config_file(file_path, label=file_label)

    # 2. env file, located by the highest source that names one
    env_file: object = cli.get("env_file") or environ.get("POUNCE_ENV_FILE") or file_values.get(
        "env_file"
    )
    from_env_file: dict[str, str] = {}
    if env_file is not None:
        if not isinstance(env_file, str):
            raise ConfigError("expected a file path", option="env_file", value=env_file)
        env_path = Path(env_file)
        if not env_path.is_absolute():
            env_path = cwd / env_path
        from_env_file = load_env_file(env_path, environ)

    # 3. environment
    explicit = {**file_values, **cli}
    env = _env_layer(environ, from_env_file, env_file, explicit)

    # 4. merge
    values: dict[str, object] = {}
    sources: dict[str, str] = dict.fromkeys(FIELD_DOCS, "default")
    for name, value in file_values.items():
        values[name] = value
        sources[name] = file_label or "config file"
    for name, (value, label) in env.items():
        values[name] = value
        sources[name] = label
    for name, value in cli.items():
        values[name] = value
        sources[name] = _cli_label(name, value)

    try:
        config = ServerConfig.from_mapping(values)
    except ConfigError as exc:
        if exc.option is not None and sources.get(exc.option, "default") != "default":
            raise exc.with_source(sources[exc.option]) from None
        raise
    return LoadedConfig(config=config, sources=sources, config_file=file_path)
