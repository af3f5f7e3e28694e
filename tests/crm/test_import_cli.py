"""`cti crm import|export|seed` end to end through cti.cli.main: exit codes, messages, files,
progress bar only on a terminal."""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from crm_bridge.progress import Progress
from cti.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database URL in the environment the CLI reads (migrated by the command itself)."""
    path = tmp_path / "cli.db"
    for name in list(os.environ):
        if name.startswith("CTI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CTI_CRM__URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("CTI_CRM__DEFAULT_AREA", "30")
    monkeypatch.setenv("CTI_LOG__FORMAT", "json")
    return path


def test_import_reports_rejects_and_returns_0(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "broken.csv"
    shutil.copyfile(DATA / "broken.csv", src)
    assert main(["crm", "import", str(src), "--batch", "5"]) == 0
    err = capsys.readouterr().err
    assert "12 rows: 3 imported, 9 rejected, 0 duplicates" in err
    assert str(src) + ".rejects.csv" in err
    assert "\r" not in err  # no progress bar: stderr is not a terminal here
    with (tmp_path / "broken.csv.rejects.csv").open(encoding="utf-8") as f:
        assert [r["line"] for r in csv.DictReader(f)] == [
            "3", "4", "5", "6", "7", "10", "12", "13", "14",
        ]  # fmt: skip


def test_import_usage_errors_exit_2(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crm", "import", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("name,telefon\nAnna,123\n", encoding="utf-8")
    assert main(["crm", "import", str(bad)]) == 2
    assert "unknown column 'telefon'" in capsys.readouterr().err
    ok = tmp_path / "ok.csv"
    ok.write_text("name\nAnna\n", encoding="utf-8")
    assert main(["crm", "import", str(ok), "--batch", "0"]) == 2
    assert main(["crm", "import", str(ok), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_import_with_own_report_paths_and_resume(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "people.csv"
    src.write_text(
        "name,phone\n"
        + "".join(f"P{i},+4930444{i:03d}\n" for i in range(30))
        + "P0 again,+4930444000\n",
        encoding="utf-8",
    )
    rep, mer = tmp_path / "out" / "rej.csv", tmp_path / "out" / "merge.csv"
    rep.parent.mkdir()
    args = ["crm", "import", str(src), "--report", str(rep), "--merges", str(mer)]
    assert main([*args, "--batch", "8"]) == 0
    assert "31 rows: 30 imported, 0 rejected, 1 duplicates" in capsys.readouterr().err
    assert rep.read_text(encoding="utf-8").splitlines() == ["line,reason,name"]
    assert "32,P0 again,phone,+4930444000" in mer.read_text(encoding="utf-8")
    # the finished import's state allows a plain re-run: everything is a duplicate now
    assert main(args) == 0
    assert "0 imported, 0 rejected, 31 duplicates" in capsys.readouterr().err


def test_seed_export_and_reimport_via_cli(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crm", "seed", "--customers", "300", "--seed", "4"]) == 0
    assert "seeded 300 customers" in capsys.readouterr().err
    assert main(["crm", "seed", "--customers", "5"]) == 1
    assert "already holds 300" in capsys.readouterr().err
    out = tmp_path / "all.csv"
    assert main(["crm", "export", "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 301
    assert not (tmp_path / "all.csv.part").exists()
    # export to standard output
    assert main(["crm", "export"]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text(encoding="utf-8")
    # into a second, empty database
    monkeypatch.setenv("CTI_CRM__URL", f"sqlite+aiosqlite:///{tmp_path / 'second.db'}")
    assert main(["crm", "import", str(out)]) == 0
    assert "300 imported" in capsys.readouterr().err
    again = tmp_path / "again.csv"
    assert main(["crm", "export", "--out", str(again)]) == 0
    assert again.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_a_batch_refused_by_the_database_exits_1(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first.csv"
    first.write_text("name\nAnna\n", encoding="utf-8")
    assert main(["crm", "import", str(first)]) == 0
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON crm_customer WHEN NEW.name = 'BOOM' "
            "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
        )
    src = tmp_path / "boom.csv"
    src.write_text("name\nBert\nBOOM\nCarl\n", encoding="utf-8")
    assert main(["crm", "import", str(src), "--batch", "2"]) == 1
    err = capsys.readouterr().err
    assert "lines 2-3" in err and "boom refused" in err and "--resume" in err
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM crm_customer ORDER BY id")]
    assert names == ["Anna"]


def test_crm_without_subcommand_is_a_usage_error(db: Path) -> None:
    assert main(["crm"]) == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    tty = _Tty()
    bar = Progress(1000, label="x.csv", stream=tty, interval=0.0)
    bar.update(250, 2500)
    bar.update(1000, 10_000)
    bar.close()
    text = tty.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert " 25.0% 2,500 rows" in text and "100.0% 10,000 rows" in text
    pipe = io.StringIO()
    quiet = Progress(1000, stream=pipe, interval=0.0)
    quiet.update(500, 5)
    quiet.close()
    assert pipe.getvalue() == ""


@pytest.mark.slow
def test_import_with_a_parsing_process_gives_the_same_result(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "broken.csv"
    shutil.copyfile(DATA / "broken.csv", src)
    assert main(["crm", "import", str(src), "--batch", "5", "--parse-process"]) == 0
    err = capsys.readouterr().err
    assert "12 rows: 3 imported, 9 rejected, 0 duplicates" in err
    assert "s in worker processes" in err  # the CPU split between the processes
    with (tmp_path / "broken.csv.rejects.csv").open(encoding="utf-8") as f:
        assert [r["line"] for r in csv.DictReader(f)] == [
            "3", "4", "5", "6", "7", "10", "12", "13", "14",
        ]  # fmt: skip
