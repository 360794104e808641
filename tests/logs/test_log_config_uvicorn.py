"""A ``--log-config`` written for Uvicorn configures Pounce's loggers unchanged."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from pounce.logs import AccessInfo, AccessLogger, configure_logging

# What a Uvicorn user typically has: Uvicorn's logger names and formatter classes.
UVICORN_STYLE = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s [%(name)s] %(message)s",
            "use_colors": False,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            "use_colors": False,
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}

INFO = AccessInfo(
    client=("127.0.0.1", 50000),
    method="GET",
    path="/items",
    query_string=b"page=2",
    http_version="1.1",
    status=200,
    bytes_sent=12,
    duration=0.001,
)


class _Settings:
    access_log = True
    access_log_format = None
    log_format = "text"


@pytest.mark.parametrize("uvicorn_installed", [True, False])
def test_uvicorn_dict_config_drives_pounce_loggers(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    uvicorn_installed: bool,
) -> None:
    if not uvicorn_installed:
        # Uvicorn's classes are never imported: the file works without Uvicorn.
        for name in ("uvicorn", "uvicorn.logging"):
            monkeypatch.setitem(sys.modules, name, None)
    path = tmp_path / "uvicorn-log.json"
    path.write_text(json.dumps(UVICORN_STYLE))
    configure_logging(log_config=path, log_level=None)
    logging.getLogger("pounce.error").info("Started server process")
    logging.getLogger("pounce.error").debug("hidden at INFO")
    AccessLogger.from_config(_Settings()).log(INFO)
    out, err = capsys.readouterr()
    assert err == "INFO:     [pounce.error] Started server process\n"
    assert out == 'INFO:     127.0.0.1:50000 - "GET /items?page=2 HTTP/1.1" 200\n'


def test_uvicorn_level_applies_to_pounce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads(json.dumps(UVICORN_STYLE))
    config["loggers"]["uvicorn"]["level"] = "WARNING"
    path = tmp_path / "log.json"
    path.write_text(json.dumps(config))
    configure_logging(log_config=path, log_level=None)
    logging.getLogger("pounce").info("quiet")
    logging.getLogger("pounce.error").warning("loud")
    assert capsys.readouterr().err == "WARNING:  [pounce.error] loud\n"


def test_pounce_names_win_over_uvicorn_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads(json.dumps(UVICORN_STYLE))
    config["handlers"]["plain"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config["loggers"]["pounce"] = {"handlers": ["plain"], "level": "INFO", "propagate": False}
    path = tmp_path / "log.json"
    path.write_text(json.dumps(config))
    configure_logging(log_config=path, log_level=None)
    logging.getLogger("pounce.error").info("mine")
    assert capsys.readouterr().err == "mine\n"


def test_uvicorn_ini_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log.ini"
    path.write_text(
        "[loggers]\nkeys=root,uvicorn,access\n\n"
        "[handlers]\nkeys=err\n\n"
        "[formatters]\nkeys=default\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_uvicorn]\nlevel=INFO\nhandlers=err\nqualname=uvicorn\npropagate=0\n\n"
        "[logger_access]\nlevel=INFO\nhandlers=err\nqualname=uvicorn.access\npropagate=0\n\n"
        "[handler_err]\nclass=StreamHandler\nformatter=default\nargs=(sys.stderr,)\n\n"
        "[formatter_default]\nclass=uvicorn.logging.DefaultFormatter\n"
        "format=%(levelprefix)s INI %(message)s\n"
    )
    configure_logging(log_config=path, log_level=None)
    logging.getLogger("pounce.error").info("from ini")
    assert capsys.readouterr().err == "INFO:     INI from ini\n"
