"""``--log-config`` problems: one line naming the file, exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pounce.cli.main import main
from pounce.config import ConfigError
from pounce.logs import configure_logging

INI_MISSING_SECTION = "[loggers]\nkeys=root\n"
INI_NOT_INI = "this is not an ini file\n"
BAD_CLASS_JSON = (
    '{"version": 1, "formatters": {"f": {"()": "no_such_module.Formatter"}},'
    ' "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f"}},'
    ' "loggers": {"pounce": {"handlers": ["h"]}}}'
)
BAD_HANDLER_JSON = '{"version": 1, "handlers": {"h": {"class": "no_such_module.Handler"}}}'

CASES = [
    ("bad.json", "{not json", "not valid JSON"),
    ("bad.yaml", "a: [unclosed", "bad.yaml"),
    ("bad.ini", INI_MISSING_SECTION, "bad.ini"),
    ("bad.conf", INI_NOT_INI, "bad.conf"),
    ("formatter.json", BAD_CLASS_JSON, "no_such_module"),
    ("handler.json", BAD_HANDLER_JSON, "no_such_module"),
]


@pytest.mark.parametrize(("name", "content", "problem"), CASES)
def test_cli_log_config_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, problem: str
) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(content)
    code = main(["tests.apps:hello", "--log-config", str(path), "--port", "0"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pounce: error: invalid log config file ")
    assert str(path) in lines[0]
    assert problem in lines[0]
    assert "Traceback" not in err


def test_cli_yaml_without_pyyaml_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.yml"
    path.write_text("version: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes "import yaml" fail
    code = main(["tests.apps:hello", "--log-config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "pip install pyyaml" in err and str(path) in err


def test_log_config_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "formatter.json"
    path.write_text(BAD_CLASS_JSON)
    with pytest.raises(ConfigError) as info:
        configure_logging(log_config=path)
    message = str(info.value)
    # dictConfig's own message ("Unable to configure formatter 'f'") and its cause, the
    # class that cannot be imported, on one line.
    assert "formatter 'f'" in message and "no_such_module" in message
    assert "\n" not in message


def test_python_dash_m_bad_log_config(tmp_path: Path) -> None:
    """The real command line: exit status 2 and one line on stderr."""
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("POUNCE_PORT", None)
    result = subprocess.run(
        [sys.executable, "-m", "pounce", "tests.apps:hello", "--log-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "not valid JSON" in result.stderr and "line 1 column 2" in result.stderr
