"""`cti agents ...` end to end on a real SQLite file: in-process through cti.cli.main (fast),
and once as the real console script."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_bridge.db import make_engine
from cti.accounts import AccountStore
from cti.cli import main

CTI = [sys.executable, "-m", "cti.cli"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def _run(tmp: Path, *args: str, stdin: str | None = None) -> Result:
        monkeypatch.setenv("CTI_DATA_DIR", str(tmp))
        monkeypatch.setenv("CTI_LOG__FORMAT", "json")
        monkeypatch.delenv("CTI_CONFIG", raising=False)
        monkeypatch.delenv("CTI_CRM__URL", raising=False)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors
            code = int(e.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return _run


def run_process(
    tmp: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CTI_DATA_DIR": str(tmp), "CTI_LOG__FORMAT": "json"}
    env.pop("CTI_CONFIG", None)
    env.pop("CTI_CRM__URL", None)
    return subprocess.run(
        [*CTI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_add_list_passwd_disable(tmp_path: Path, run) -> None:
    r = run(
        tmp_path,
        "agents",
        "add",
        "Root",
        "--role",
        "admin",
        "--name",
        "The Admin",
        "--password-stdin",
        stdin="admin-password\n",
    )
    assert r.returncode == 0, r.stderr
    assert "created admin root" in r.stdout
    r = run(tmp_path, "agents", "add", "alice", "--password-stdin", stdin="alice-password\n")
    assert r.returncode == 0, r.stderr
    # duplicate, weak password, bad role: clear errors, meaningful exit codes
    r = run(tmp_path, "agents", "add", "alice", "--password-stdin", stdin="another-pass\n")
    assert r.returncode == 1 and "taken" in r.stderr
    r = run(tmp_path, "agents", "add", "bob", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = run(tmp_path, "agents", "add", "bob", "--role", "boss", "--password-stdin", stdin="x" * 9)
    assert r.returncode == 2
    # without a terminal and without --password-stdin nothing is created
    r = run(tmp_path, "agents", "add", "carol")
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    r = run(tmp_path, "agents", "add", "bad name", "--password-stdin", stdin="long-enough\n")
    assert r.returncode == 1 and "username" in r.stderr

    r = run(tmp_path, "agents", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["username"], x["role"], x["display_name"]) for x in rows] == [
        ("alice", "agent", ""),
        ("root", "admin", "The Admin"),
    ]
    r = run(tmp_path, "agents", "list")
    assert "USERNAME" in r.stdout and "root" in r.stdout and "admin-password" not in r.stdout

    r = run(tmp_path, "agents", "passwd", "alice", "--password-stdin", stdin="new-alice-pass\n")
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "agents", "disable", "root")
    assert r.returncode == 0 and "disabled" in r.stdout
    r = run(tmp_path, "agents", "disable", "nobody")
    assert r.returncode == 1 and "no account" in r.stderr

    async def check() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
        store = AccountStore(engine)
        assert await store.authenticate("alice", "alice-password") is None
        assert await store.authenticate("alice", "new-alice-pass") is not None
        assert await store.authenticate("root", "admin-password") is None  # disabled
        await engine.dispose()

    asyncio.run(check())
    r = run(tmp_path, "agents", "enable", "root")
    assert r.returncode == 0


@pytest.mark.slow
def test_console_script(tmp_path: Path) -> None:
    r = run_process(tmp_path, "agents")
    assert r.returncode == 2 and "ACTION" in r.stderr
    r = run_process(tmp_path, "agents", "add", "eve", "--password-stdin", stdin="eve-password\n")
    assert r.returncode == 0 and "created agent eve" in r.stdout, r.stderr
    r = run_process(tmp_path, "agents", "add", "mallory")  # stdin is not a terminal
    assert r.returncode == 2 and "--password-stdin" in r.stderr
