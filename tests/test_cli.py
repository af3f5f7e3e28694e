"""Exit codes that mean something, for the commands an operator scripts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cti.cli import main


def test_serve_exits_3_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CTI_AMI__SERVERS", '[{"name": "pbx", "port": 9, "reconnect_min": 5}]')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--log-format", "json", "serve", "--port", str(port)]) == 3
    assert "cannot start" in capsys.readouterr().err


def test_replay_of_a_missing_file_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "/nonexistent/trace.ami"]) == 1
    assert "trace.ami" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
