"""Merging defaults < config file < environment < CLI, with provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from pounce.config import ConfigError, load_config, load_env_file, parse_dotenv
from pounce.config.sources import find_config_file


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_only(tmp_path: Path) -> None:
    loaded = load_config({}, environ={}, cwd=tmp_path)
    assert loaded.config.port == 8000
    assert loaded.config_file is None
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_default_file_env_cli(tmp_path: Path) -> None:
    write(
        tmp_path / "pounce.toml",
        'port = 9001\nhost = "0.0.0.0"\nbacklog = 100\ntimeout-keep-alive = "1m"\n',
    )
    environ = {"POUNCE_PORT": "9002", "POUNCE_BACKLOG": "200"}
    loaded = load_config({"port": "9003"}, environ=environ, cwd=tmp_path)
    c = loaded.config
    assert (c.port, c.backlog, c.host, c.timeout_keep_alive) == (9003, 200, "0.0.0.0", 60.0)
    assert loaded.sources["port"] == "cli --port"
    assert loaded.sources["backlog"] == "env POUNCE_BACKLOG"
    assert loaded.sources["host"] == "pounce.toml"
    assert loaded.sources["timeout_keep_alive"] == "pounce.toml"
    assert loaded.sources["log_level"] == "default"
    assert loaded.config_file == tmp_path / "pounce.toml"


def test_pyproject_tool_pounce(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.pounce]\napp = "main:app"\n'
                                       "limit-request-fields = 10\n")
    loaded = load_config({}, environ={}, cwd=tmp_path)
    assert loaded.config.app == "main:app"
    assert loaded.config.limit_request_fields == 10
    assert loaded.sources["app"] == "pyproject.toml [tool.pounce]"


def test_pyproject_without_tool_pounce_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert find_config_file(tmp_path) is None


def test_both_pounce_toml_and_pyproject_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.pounce]\nport = 1\n")
    write(tmp_path / "pounce.toml", "port = 2\n")
    with pytest.raises(ConfigError, match="keep one of them"):
        load_config({}, environ={}, cwd=tmp_path)


def test_explicit_config_file_wins_over_implicit(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", "port = 2\n")
    write(tmp_path / "prod.toml", "port = 3\n")
    loaded = load_config({}, environ={}, cwd=tmp_path, config_file="prod.toml")
    assert loaded.config.port == 3
    assert loaded.sources["port"] == "prod.toml"


def test_explicit_pyproject_reads_tool_table(tmp_path: Path) -> None:
    write(tmp_path / "sub.toml", "")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "pyproject.toml", "[tool.pounce]\nport = 5\n")
    loaded = load_config({}, environ={}, cwd=tmp_path, config_file="sub/pyproject.toml")
    assert loaded.config.port == 5


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file 'nope.toml' not found"):
        load_config({}, environ={}, cwd=tmp_path, config_file="nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", "port = \n")
    with pytest.raises(ConfigError, match=r"pounce\.toml is not valid TOML"):
        load_config({}, environ={}, cwd=tmp_path)


def test_unknown_key_in_file_suggests_and_names_file(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", "prot = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, environ={}, cwd=tmp_path)
    assert "did you mean 'port'" in str(info.value)
    assert "pounce.toml" in str(info.value)


def test_same_key_twice_in_file(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", "root-path = '/a'\nroot_path = '/b'\n")
    with pytest.raises(ConfigError, match="twice"):
        load_config({}, environ={}, cwd=tmp_path)


def test_bad_value_error_names_its_source(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", "backlog = 0\n")
    with pytest.raises(ConfigError, match=r"invalid backlog 0 \(from pounce.toml\)"):
        load_config({}, environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"invalid port 'x' \(from env POUNCE_PORT\)"):
        load_config({}, environ={"POUNCE_PORT": "x"}, cwd=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"invalid port 'y' \(from cli --port\)"):
        load_config({"port": "y"}, environ={}, cwd=tmp_path / "none")


def test_toml_typed_values(tmp_path: Path) -> None:
    write(
        tmp_path / "pounce.toml",
        'forwarded-allow-ips = ["10.0.0.0/8", "*"]\nheaders = ["X-A: 1", ["X-B", "2"]]\n'
        "proxy-headers = false\nworkers = 1\nlimit-request-body = '10m'\n",
    )
    c = load_config({}, environ={}, cwd=tmp_path).config
    assert c.forwarded_allow_ips == ("10.0.0.0/8", "*")
    assert c.headers == (("X-A", "1"), ("X-B", "2"))
    assert c.proxy_headers is False
    assert c.limit_request_body == 10 * 1024 * 1024


# --------------------------------------------------------------------------- environment


def test_every_field_has_an_env_variable(tmp_path: Path) -> None:
    environ = {
        "POUNCE_APP": "main:app",
        "POUNCE_LOG_LEVEL": "debug",
        "POUNCE_ACCESS_LOG": "false",
        "POUNCE_FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
        "POUNCE_HEADERS": "X-A: 1, 2, X-B: 3",
        "POUNCE_TIMEOUT_WRITE": "250ms",
    }
    loaded = load_config({}, environ=environ, cwd=tmp_path)
    c = loaded.config
    assert c.app == "main:app"
    assert c.log_level == "debug"
    assert c.access_log is False
    assert c.forwarded_allow_ips == ("10.0.0.1", "10.0.0.2")
    assert c.headers == (("X-A", "1, 2"), ("X-B", "3"))
    assert c.timeout_write == 0.25
    assert loaded.sources["access_log"] == "env POUNCE_ACCESS_LOG"


def test_empty_env_variables_count_as_unset(tmp_path: Path) -> None:
    loaded = load_config({}, environ={"POUNCE_UDS": "", "PORT": ""}, cwd=tmp_path)
    assert loaded.config.uds is None
    assert loaded.sources["uds"] == "default"


def test_platform_variables(tmp_path: Path) -> None:
    environ = {"PORT": "5000", "WEB_CONCURRENCY": "1", "FORWARDED_ALLOW_IPS": "10.0.0.1,*"}
    loaded = load_config({}, environ=environ, cwd=tmp_path)
    assert loaded.config.port == 5000
    assert loaded.config.workers == 1
    assert loaded.config.forwarded_allow_ips == ("10.0.0.1", "*")
    assert loaded.sources["port"] == "env PORT"
    assert loaded.sources["workers"] == "env WEB_CONCURRENCY"
    assert loaded.sources["forwarded_allow_ips"] == "env FORWARDED_ALLOW_IPS"


def test_pounce_variables_beat_platform_variables(tmp_path: Path) -> None:
    environ = {"PORT": "5000", "POUNCE_PORT": "6000", "WEB_CONCURRENCY": "4",
               "POUNCE_WORKERS": "1"}
    loaded = load_config({}, environ=environ, cwd=tmp_path)
    assert loaded.config.port == 6000
    assert loaded.config.workers == 1
    assert loaded.sources["port"] == "env POUNCE_PORT"


def test_platform_port_yields_to_explicit_bind(tmp_path: Path) -> None:
    loaded = load_config({"bind": ["0.0.0.0:7000"]}, environ={"PORT": "5000"}, cwd=tmp_path)
    assert loaded.config.port == 8000
    assert str(loaded.config.bind_specs[0]) == "0.0.0.0:7000"
    loaded = load_config({"uds": "/tmp/x.sock"}, environ={"PORT": "5000"}, cwd=tmp_path)
    assert loaded.config.bind_specs[0].kind == "unix"


def test_env_lists_are_comma_separated(tmp_path: Path) -> None:
    environ = {"POUNCE_RELOAD": "1", "POUNCE_RELOAD_DIRS": "src, lib"}
    c = load_config({}, environ=environ, cwd=tmp_path).config
    assert c.reload_dirs == ("src", "lib")


def test_near_miss_env_variable_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean POUNCE_PORT"):
        load_config({}, environ={"POUNCE_PORTT": "1"}, cwd=tmp_path)
    # Unrelated POUNCE_* variables (internal or tooling) are left alone.
    load_config({}, environ={"POUNCE_WORKER_ID": "3"}, cwd=tmp_path)


def test_cli_beats_everything_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", 'headers = ["X-File: 1"]\n')
    environ = {"POUNCE_HEADERS": "X-Env: 1"}
    loaded = load_config({"headers": ["X-Cli: 1"]}, environ=environ, cwd=tmp_path)
    assert loaded.config.headers == (("X-Cli", "1"),)
    assert loaded.sources["headers"] == "cli --header"


def test_cli_labels() -> None:
    loaded = load_config({"access_log": False, "app": "m:a", "use_colors": True}, environ={},
                         cwd=Path("/nonexistent-dir-for-pounce-tests"))
    assert loaded.sources["access_log"] == "cli --no-access-log"
    assert loaded.sources["use_colors"] == "cli --use-colors"
    assert loaded.sources["app"] == "cli APP"


def test_unknown_cli_key() -> None:
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        load_config({"worker": 1}, environ={}, cwd=Path("/nonexistent-dir-for-pounce-tests"))


# --------------------------------------------------------------------------- env file


DOTENV = """\
# comment
export POUNCE_PORT=7001
POUNCE_ROOT_PATH = /mounted   # trailing comment
SINGLE='literal # not a comment \\n'
DOUBLE="line\\nbreak \\"quoted\\""
EMPTY=
URL=http://example.com/#fragment
"""


def test_parse_dotenv() -> None:
    assert parse_dotenv(DOTENV) == {
        "POUNCE_PORT": "7001",
        "POUNCE_ROOT_PATH": "/mounted",
        "SINGLE": "literal # not a comment \\n",
        "DOUBLE": 'line\nbreak "quoted"',
        "EMPTY": "",
        "URL": "http://example.com/#fragment",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOEQUALS\n", "line 1: expected KEY=VALUE"),
        ("\n1BAD=x\n", "line 2: expected KEY=VALUE"),
        ('A="open\n', "unterminated"),
        ("A='x' y\n", "after the closing quote"),
    ],
)
def test_parse_dotenv_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dotenv(text)


def test_env_file_is_loaded_before_env_is_read(tmp_path: Path) -> None:
    write(tmp_path / ".env", DOTENV)
    environ: dict[str, str] = {"POUNCE_ROOT_PATH": "/real"}
    loaded = load_config({"env_file": ".env"}, environ=environ, cwd=tmp_path)
    assert loaded.config.port == 7001
    assert loaded.sources["port"] == "env POUNCE_PORT from .env"
    # The real environment wins over the file.
    assert loaded.config.root_path == "/real"
    assert loaded.sources["root_path"] == "env POUNCE_ROOT_PATH"
    # Variables reach the environment for the application too.
    assert environ["DOUBLE"] == 'line\nbreak "quoted"'


def test_env_file_from_config_file(tmp_path: Path) -> None:
    write(tmp_path / "pounce.toml", 'env-file = "settings.env"\n')
    write(tmp_path / "settings.env", "POUNCE_BACKLOG=7\n")
    loaded = load_config({}, environ={}, cwd=tmp_path)
    assert loaded.config.backlog == 7


def test_missing_env_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env file .* not found"):
        load_config({"env_file": "missing.env"}, environ={}, cwd=tmp_path)


def test_load_env_file_override(tmp_path: Path) -> None:
    path = write(tmp_path / "x.env", "A=file\nB=file\n")
    environ = {"A": "real"}
    assert load_env_file(path, environ) == {"B": "file"}
    assert environ == {"A": "real", "B": "file"}
    assert load_env_file(path, environ, override=True) == {"A": "file", "B": "file"}


@pytest.mark.parametrize(
    ("var", "suggestion"),
    [
        ("POUNCE_TIMEOUT_KEEPALIVE", "POUNCE_TIMEOUT_KEEP_ALIVE"),
        ("POUNCE_HEADER", "POUNCE_HEADERS"),
        ("POUNCE_RELAOD", "POUNCE_RELOAD"),
    ],
)
def test_env_typos(tmp_path: Path, var: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}"):
        load_config({}, environ={var: "1"}, cwd=tmp_path)
