"""`cti dialer ...` in process on a real SQLite file: campaigns, import with a row-level
report and exit codes, stats (table, JSON, CSV), callbacks, and the simulator's entry point."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cti.cli import main

SCENARIOS = Path(__file__).resolve().parents[2] / "config" / "scenarios"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cti(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    def run(*args: str) -> Result:
        monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("CTI_LOG__FORMAT", "json")
        monkeypatch.setenv("CTI_LOG__LEVEL", "warning")
        monkeypatch.delenv("CTI_CONFIG", raising=False)
        monkeypatch.delenv("CTI_CRM__URL", raising=False)
        monkeypatch.delenv("CTI_TEST_PG_URL", raising=False)  # not a setting
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        try:
            code = main(["dialer", *args])
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


@pytest.mark.slow  # each command migrates first (about 0.3 s each)
def test_campaigns_import_stats_and_callbacks(cti, tmp_path: Path) -> None:
    r = cti("campaign", "add", "winter", "--queue", "sales", "--max-ring", "10")
    assert r.code == 2 and "max_ring_seconds" in r.err
    r = cti("campaign", "add", "winter", "--queue", "sales", "--window", "0800")
    assert r.code == 2 and "--window" in r.err
    r = cti("campaign", "add", "winter", "--queue", "sales", "--retry", '{"bsy": {}}')
    assert r.code == 2 and "retry" in r.err
    r = cti(
        "campaign",
        "add",
        "winter",
        "--queue",
        "sales",
        "--mode",
        "predictive",
        "--window",
        "09:00-20:00",
        "--retry",
        '{"busy": {"delay_seconds": 120}}',
    )
    assert r.code == 0, r.err
    assert cti("campaign", "add", "winter", "--queue", "sales").code == 1  # exists
    spec = tmp_path / "summer.toml"
    spec.write_text('mode = "preview"\ncaller_id = "+4930999"\n')
    assert (
        cti("campaigns", "add", "summer", "--queue", "support", "--from-file", str(spec)).code == 0
    )

    r = cti("campaign", "list", "--json")
    rows = {c["name"]: c for c in json.loads(r.out)}
    assert rows["winter"]["mode"] == "predictive" and rows["winter"]["window_start"] == "09:00"
    assert rows["winter"]["retry"] == {"busy": {"delay_seconds": 120}}
    assert rows["summer"]["mode"] == "preview" and rows["summer"]["caller_id"] == "+4930999"
    r = cti("campaign", "list")
    assert "winter" in r.out and "predictive" in r.out

    assert cti("campaign", "start", "winter").code == 1  # no leads yet
    assert cti("campaign", "start", "nope").code == 2

    good = tmp_path / "leads.csv"
    good.write_text("ref,name,phone,tariff\nr1,Anna,+4930555101,gold\nr2,Bert,030 5552 02,\n")
    r = cti("import", "winter", str(good), "--no-progress")
    assert r.code == 0 and "2 leads imported" in r.err
    bad = tmp_path / "more.csv"
    bad.write_text("ref,name,phone\nr3,Carl,+4930555103\nr4,Dora,12\nr5,Emil\n")
    r = cti("import", "winter", str(bad), "--no-progress")
    assert r.code == 1 and "1 leads imported" in r.err
    with (tmp_path / "more.csv.rejects.csv").open() as f:
        rejects = list(csv.DictReader(f))
    assert [x["line"] for x in rejects] == ["3", "4"]
    headerless = tmp_path / "nophone.csv"
    headerless.write_text("name\nx\n")
    assert cti("import", "winter", str(headerless), "--no-progress").code == 2
    assert cti("import", "nope", str(good), "--no-progress").code == 2
    assert cti("import", "winter", str(tmp_path / "missing.csv")).code == 2

    r = cti("campaign", "start", "winter")
    assert r.code == 0 and "running" in r.out
    r = cti("campaign", "pause", "winter")
    assert r.code == 0 and "paused" in r.out
    assert cti("campaign", "delete", "winter").code == 1  # not stopped
    r = cti("campaign", "show", "winter")
    shown = json.loads(r.out)
    assert shown["state"] == "paused" and shown["figures"]["leads_remaining"] == 3

    r = cti("stats")
    assert r.code == 0 and "winter" in r.out and "summer" in r.out
    r = cti("stats", "--json", "--campaign", "winter")
    (fig,) = json.loads(r.out)
    assert fig["leads_by_state"] == {"new": 3} and fig["attempts"] == 0
    assert cti("stats", "--campaign", "nope").code == 2
    r = cti("stats", "--csv")
    assert r.code == 0 and r.out.startswith("kind,name,day,logged_in")
    assert cti("stats", "--csv", "--from", "yesterday").code == 2

    r = cti("callbacks", "--missed")
    assert r.code == 0 and "CAMPAIGN" in r.out

    assert cti("campaign", "stop", "winter").code == 0
    assert cti("campaign", "delete", "winter").code == 0
    assert "winter" not in cti("campaign", "list").out


def test_simulate_calls_the_simulator(cti, tmp_path: Path) -> None:
    assert cti("simulate", "--scenario", str(tmp_path / "none.toml")).code == 2
    assert cti("simulate", "--scenario", "x.toml", "--seeds", "0").code == 2
    small = SCENARIOS / "small.toml"
    if not small.is_file():
        pytest.skip("no small scenario shipped")
    r = cti("simulate", "--scenario", str(small), "--pacer", "progressive", "--seeds", "1")
    assert r.code == 0, r.err
    assert "pacer progressive" in r.out and "compliance: no violation" in r.out
