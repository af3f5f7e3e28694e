"""`cti replay FILE --jsonl` through the real CLI on every shared trace, against expectations
written by hand (tests/ami/expected/traces.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cti.cli import main
from tests.ami.expected.traces import EXPECTED, LAB_ENDPOINTS

TRACES = Path(__file__).resolve().parent.parent / "traces"
ALL_TRACES = sorted(p.name for p in TRACES.glob("*.ami"))


@pytest.fixture
def lab_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "lab.toml"
    patterns = ", ".join(json.dumps(p) for p in LAB_ENDPOINTS)
    cfg.write_text(f"[ami.tracker]\nlocal_endpoints = [{patterns}]\n")
    return cfg


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines()]


def compact(d: dict[str, Any]) -> tuple[object, ...]:
    ev = d["event"]
    if ev == "originate_result":
        return (ev, d["action_id"], d["result"], d["cause"])
    if ev == "ringing":
        c = d["caller"]
        return (
            ev,
            c["channel"],
            c["number"],
            tuple(t["channel"] for t in d["targets"]),
            d.get("queue"),
        )
    if ev == "ringing_end":
        return (ev, tuple(t["channel"] for t in d["targets"]), d["reason"])
    if ev == "up":
        return (ev, d["caller"]["channel"], d["callee"]["channel"])
    if ev == "transfer":
        tr = d["transferer"]
        return (
            ev,
            d["kind"],
            d["caller"]["channel"],
            tr and tr["channel"],
            tuple(t["channel"] for t in d["targets"]),
        )
    if ev == "hangup":
        c = d["caller"]
        return (ev, c["channel"], c["number"], d["reason"], d["cause"])
    if ev == "queue_abandon":
        return (ev, d["caller"]["channel"], d["queue"])
    return (ev,)


def test_every_trace_has_an_expectation() -> None:
    assert set(ALL_TRACES) - set(EXPECTED) == {"10-burst-50-originates.ami"}
    assert len(ALL_TRACES) >= 18


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trace_events(name: str, lab_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, events = replay(
        capsys, "--config", str(lab_config), "replay", str(TRACES / name), "--jsonl"
    )
    assert rc == 0
    assert [compact(e) for e in events] == EXPECTED[name]
    for e in events:
        assert set(e) >= {"event", "call_id", "at"}
        assert isinstance(e["at"], float)


def test_burst_of_50_originates(lab_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, events = replay(
        capsys,
        "--config",
        str(lab_config),
        "replay",
        str(TRACES / "10-burst-50-originates.ami"),
        "--jsonl",
    )
    assert rc == 0
    results = [e for e in events if e["event"] == "originate_result"]
    assert sorted(e["action_id"] for e in results) == [f"burst-{i:02d}" for i in range(50)]
    assert {e["result"] for e in results} == {"answered"}
    hangups = [e for e in events if e["event"] == "hangup"]
    # every customer answers (Answer, 1 s, Hangup) but talks to no other endpoint: the
    # customer's own Cause 16 without a connection maps to no-answer
    assert len(hangups) == 50
    assert len({h["call_id"] for h in hangups}) == 50
    assert all(
        h["caller"]["channel"].endswith(";2") and "@pstn-" in h["caller"]["channel"]
        for h in hangups
    )
    assert {(h["reason"], h["cause"]) for h in hangups} == {("no-answer", 16)}
    assert {e["event"] for e in events} == {"originate_result", "hangup"}
    # each result belongs to the call of its originated channel
    assert {e["call_id"] for e in results} == {h["call_id"] for h in hangups}


def test_details_beyond_the_compact_form(
    lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ["--config", str(lab_config), "replay"]
    # dialer variables: inherited ones lose their underscores, Asterisk's own are left out
    _, ev05 = replay(
        capsys, *cfg, str(TRACES / "05-outbound-dialer-answered-to-queue.ami"), "--jsonl"
    )
    assert ev05[0]["variables"] == {
        "CUSTOMER_TALK": "5",
        "AGENT_DELAY": "0.5",
        "LEAD_PHONE": "+4930555101",
        "LEAD": "42",
        "CAMPAIGN": "c1",
    }
    ring = ev05[1]
    assert ring["variables"]["CAMPAIGN"] == "c1" and ring["variables"]["LEAD"] == "42"
    assert ring["caller"]["exten"] == "+4930555101"
    assert ring["call_id"] == "1795343595.26"
    # a Local ;2 endpoint shows the caller ID its ;1 half presents: agent1 is "2001" once it
    # answered (connected-line update), the atxfer target "2002"
    up = next(e for e in ev05 if e["event"] == "up")
    assert (up["callee"]["number"], up["callee"]["name"]) == ("2001", "Agent 1")
    _, ev09c = replay(capsys, *cfg, str(TRACES / "09c-attended-transfer-atxfer.ami"), "--jsonl")
    xfer = next(e for e in ev09c if e["event"] == "transfer")
    assert xfer["transferer"]["number"] == "2001" and xfer["targets"][0]["number"] == "2002"
    assert xfer["caller"]["number"] == "+4930123462"
    # failures carry the variables of their originated channel too (trace 08: the response
    # came before the channel events, the result waited for them)
    for name, lead in (("06-outbound-busy.ami", "43"), ("08-outbound-congestion.ami", "45")):
        _, ev = replay(capsys, *cfg, str(TRACES / name), "--jsonl")
        assert ev[0]["variables"]["LEAD"] == lead and ev[0]["variables"]["CAMPAIGN"] == "c1"
    # ChannelId makes the failure's call id the one Asterisk used
    _, ev07 = replay(capsys, *cfg, str(TRACES / "07-outbound-no-answer.ami"), "--jsonl")
    assert ev07[0]["call_id"] == "dialer-c1-44-a"
    # presentation: only NewCallerid carries it; the agent leg of call B shows prohibited
    _, ev04 = replay(capsys, *cfg, str(TRACES / "04-inbound-anonymous-callerid.ami"), "--jsonl")
    ring_b = [e for e in ev04 if e["event"] == "ringing"][1]
    assert ring_b["caller"]["exten"] == "801"
    assert ring_b["targets"][0]["cid_calling_pres"].startswith("35 ")
    assert ring_b["caller"]["name"] == "Anonymous"
    # after a transfer the caller's exten is the transfer destination
    for name, exten in (
        ("09a-blind-transfer-redirect.ami", "810"),
        ("09b-blind-transfer-action.ami", "810"),
        ("09c-attended-transfer-atxfer.ami", "2002"),
    ):
        _, ev = replay(capsys, *cfg, str(TRACES / name), "--jsonl")
        first = next(e for e in ev if e["event"] == "ringing")
        assert first["caller"]["exten"] == "800"
        assert ev[-1]["event"] == "hangup" and ev[-1]["caller"]["exten"] == exten
        assert {e["call_id"] for e in ev} == {ev[0]["call_id"]}  # kept through the transfer


def test_default_settings_treat_local_channels_as_plumbing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without local_endpoints the lab's Local-only calls have no endpoint: nobody rings."""
    rc, events = replay(
        capsys, "replay", str(TRACES / "01-inbound-queue-agent1-answers.ami"), "--jsonl"
    )
    assert rc == 0
    assert [compact(e) for e in events] == [("originate_result", "s01-in", "answered", None)]


def test_table_output(lab_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    rc = main(
        ["--config", str(lab_config), "replay", str(TRACES / "09b-blind-transfer-action.ami")]
    )
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split() == ["time", "call", "id", "event", "details"]
    xfer = next(line for line in out if " transfer " in line)
    assert "blind:" in xfer and "agent1@agents-00000016;2" in xfer
    assert "agent3@agents-00000017;2" in xfer
    assert out[-1].split()[2] == "hangup" and "completed" in out[-1]


def test_missing_file_exits_1_with_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(["replay", str(tmp_path / "nope.ami")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot read" in err and "nope.ami" in err


def test_stdin_and_lf_only_input(lab_config: Path) -> None:
    """'-' reads standard input; a trace with bare LF line ends replays the same."""
    raw = (TRACES / "03-inbound-queue-caller-abandons.ami").read_bytes().replace(b"\r\n", b"\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cti.cli", "--config", str(lab_config), "replay", "-", "--jsonl"],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [compact(e) for e in events] == EXPECTED["03-inbound-queue-caller-abandons.ami"]


def test_garbage_file_is_read_without_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.ami"
    junk.write_bytes(b"\x00\xff garbage\r\nno colon here\r\n\r\nEvent: Hangup\r\n\r\n# t=x\n")
    rc, events = replay(capsys, "replay", str(junk), "--jsonl")
    assert rc == 0 and events == []
