"""configure_logging, the TRACE level and the text/JSON formatters."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pounce.logs import (
    TRACE,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    configure_logging_from_config,
    parse_log_level,
)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _streams() -> tuple[io.StringIO, io.StringIO]:
    return io.StringIO(), io.StringIO()


def test_trace_level_is_registered() -> None:
    assert TRACE == 5
    assert logging.getLevelName(5) == "TRACE"
    assert parse_log_level("trace") == 5
    assert parse_log_level("WARNING") == logging.WARNING
    assert parse_log_level(15) == 15
    with pytest.raises(ValueError, match="verbose"):
        parse_log_level("verbose")


def test_default_handlers_route_error_and_access() -> None:
    err, out = _streams()
    configure_logging(log_level="info", error_stream=err, access_stream=out)
    logging.getLogger("pounce.error").info("started")
    logging.getLogger("pounce.access").info("GET /")
    logging.getLogger("pounce.error").debug("hidden")
    assert err.getvalue() == "INFO:     started\n"
    assert out.getvalue() == "INFO:     GET /\n"


def test_module_loggers_share_the_error_handler() -> None:
    err, out = _streams()
    configure_logging(error_stream=err, access_stream=out)
    logging.getLogger("pounce.features.proxy_headers").warning("careful")
    assert err.getvalue() == "WARNING:  careful\n"


def test_trace_level_logs() -> None:
    err, out = _streams()
    configure_logging(log_level="trace", error_stream=err, access_stream=out)
    logging.getLogger("pounce.error").log(TRACE, "bytes in")
    assert err.getvalue() == "TRACE:    bytes in\n"


def test_configure_is_idempotent() -> None:
    err, out = _streams()
    configure_logging(error_stream=err, access_stream=out)
    configure_logging(error_stream=err, access_stream=out)
    logging.getLogger("pounce.error").warning("once")
    logging.getLogger("pounce.access").info("once")
    assert err.getvalue().count("once") == 1
    assert out.getvalue().count("once") == 1
    assert len(logging.getLogger("pounce").handlers) == 1
    assert len(logging.getLogger("pounce.access").handlers) == 1


def test_pounce_lines_do_not_propagate_to_root() -> None:
    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    logging.getLogger().addHandler(root_handler)
    try:
        err, out = _streams()
        configure_logging(error_stream=err, access_stream=out)
        logging.getLogger("pounce.error").warning("x")
        assert root_stream.getvalue() == ""
    finally:
        logging.getLogger().removeHandler(root_handler)


def test_colours_auto_on_tty_only() -> None:
    tty, plain = _TTY(), io.StringIO()
    configure_logging(error_stream=tty, access_stream=plain)
    logging.getLogger("pounce.error").info("hi")
    logging.getLogger("pounce.access").info("hi")
    assert tty.getvalue() == "\x1b[32mINFO\x1b[0m:     hi\n"
    assert plain.getvalue() == "INFO:     hi\n"


@pytest.mark.parametrize(("use_colors", "coloured"), [(True, True), (False, False)])
def test_colours_forced(use_colors: bool, coloured: bool) -> None:
    err, out = _TTY(), io.StringIO()
    configure_logging(use_colors=use_colors, error_stream=err, access_stream=out)
    logging.getLogger("pounce.error").error("boom")
    logging.getLogger("pounce.access").error("boom")
    assert ("\x1b[" in err.getvalue()) is coloured
    assert ("\x1b[" in out.getvalue()) is coloured


def test_text_formatter_does_not_mutate_record() -> None:
    record = logging.makeLogRecord({"msg": "m", "levelno": 20, "levelname": "INFO"})
    assert TextFormatter(use_colors=True).format(record).startswith("\x1b[32mINFO")
    assert TextFormatter(use_colors=False).format(record) == "INFO:     m"
    assert record.levelname == "INFO"


def test_json_formatter_output_parses() -> None:
    err, out = _streams()
    configure_logging(log_format="json", error_stream=err, access_stream=out)
    logging.getLogger("pounce.error").warning(
        "line1\nline2 \u2028 %s", "arg", extra={"status": 200, "odd": object()}
    )
    text = err.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    data = json.loads(text)
    assert data["level"] == "WARNING"
    assert data["logger"] == "pounce.error"
    assert data["message"] == "line1\nline2 \u2028 arg"
    assert data["status"] == 200
    assert data["odd"].startswith("<object")
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert "args" not in data and "msg" not in data and "levelno" not in data


def test_json_formatter_exception() -> None:
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    data = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: bad" in data["exc_info"]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging(log_format="xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging(log_level="loud")


def _dict_config(stream_name: str) -> dict[str, object]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "CFG %(name)s %(message)s"}},
        "handlers": {
            "mem": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": stream_name,
            }
        },
        "loggers": {"pounce": {"handlers": ["mem"], "propagate": False}},
    }


@pytest.fixture
def capture_stream(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    # dictConfig resolves "ext://..." names; point one at a StringIO we own.
    stream = io.StringIO()
    monkeypatch.setattr(sys.modules[__name__], "CAPTURE", stream, raising=False)
    return stream


STREAM_REF = f"ext://{__name__}.CAPTURE"


def test_log_config_json(tmp_path: Path, capture_stream: io.StringIO) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps(_dict_config(STREAM_REF)))
    configure_logging(log_config=path, log_level="debug")
    logging.getLogger("pounce.error").debug("from json")
    assert capture_stream.getvalue() == "CFG pounce.error from json\n"


def test_log_config_yaml(tmp_path: Path, capture_stream: io.StringIO) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "log.yaml"
    path.write_text(yaml.safe_dump(_dict_config(STREAM_REF)))
    configure_logging(log_config=str(path), log_level="info")
    logging.getLogger("pounce.error").info("from yaml")
    logging.getLogger("pounce.error").debug("not shown")
    assert capture_stream.getvalue() == "CFG pounce.error from yaml\n"


def test_log_config_keeps_existing_loggers(tmp_path: Path, capture_stream: io.StringIO) -> None:
    app_logger = logging.getLogger("someapp.module")
    path = tmp_path / "log.json"
    path.write_text(json.dumps(_dict_config(STREAM_REF)))
    configure_logging(log_config=path)
    assert not app_logger.disabled


def test_log_config_ini(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fileConfig evaluates handler args in the logging module's namespace,
    # where "sys" is available; capsys has already replaced sys.stderr.
    path = tmp_path / "log.ini"
    path.write_text(
        "[loggers]\nkeys=root,pounce\n\n"
        "[handlers]\nkeys=mem\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_pounce]\nlevel=INFO\nhandlers=mem\nqualname=pounce\npropagate=0\n\n"
        "[handler_mem]\nclass=StreamHandler\nformatter=plain\nargs=(sys.stderr,)\n\n"
        "[formatter_plain]\nformat=INI %(message)s\n"
    )
    configure_logging(log_config=path, log_level=None)
    logging.getLogger("pounce.error").info("from ini")
    assert capsys.readouterr().err == "INI from ini\n"


def test_log_config_replaces_default_handlers(tmp_path: Path, capture_stream: io.StringIO) -> None:
    err, out = _streams()
    configure_logging(error_stream=err, access_stream=out)
    path = tmp_path / "log.json"
    path.write_text(json.dumps(_dict_config(STREAM_REF)))
    configure_logging(log_config=path)
    logging.getLogger("pounce.error").info("where")
    assert err.getvalue() == ""
    assert capture_stream.getvalue() == "CFG pounce.error where\n"


def test_log_config_mapping(capture_stream: io.StringIO) -> None:
    configure_logging(log_config=_dict_config(STREAM_REF))
    logging.getLogger("pounce.error").info("mapping")
    assert capture_stream.getvalue() == "CFG pounce.error mapping\n"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("bad.json", "{not json", "bad.json"),
        ("list.json", "[1, 2]", "mapping"),
        ("bad.yaml", "a: [unclosed", "bad.yaml"),
        ("bad.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Class"}}}', "bad.json"),
        ("bad.ini", "[loggers]\nkeys=root\n", "bad.ini"),
    ],
)
def test_log_config_errors_name_the_file(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        configure_logging(log_config=path)
    assert str(path) in str(info.value)


def test_log_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ValueError, match="does not exist"):
        configure_logging(log_config=path)


def test_yaml_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log.yml"
    path.write_text("version: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes "import yaml" fail
    with pytest.raises(ValueError, match="PyYAML") as info:
        configure_logging(log_config=path)
    assert str(path) in str(info.value)


def test_configure_from_config() -> None:
    config = SimpleNamespace(
        log_level="warning", log_config=None, log_format="text", use_colors=False
    )
    configure_logging_from_config(config)
    assert logging.getLogger("pounce").level == logging.WARNING
    assert logging.getLogger("pounce.error").getEffectiveLevel() == logging.WARNING
