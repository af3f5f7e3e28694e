"""AMI framing: the bytes-to-messages layer every AMI path goes through."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami.framing import MAX_FRAME_BYTES, AmiParser
from ami.trace import read_trace, wire_bytes
from ami.tracker import CallTracker
from tests.ami.expected.traces import LAB_ENDPOINTS

TRACES = Path(__file__).parent / "traces"


def test_banner_is_kept_and_not_returned_as_a_message() -> None:
    p = AmiParser()
    out = p.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n")
    assert p.banner == "Asterisk Call Manager/11.0.0"
    assert out == [{"Response": "Success", "ActionID": "1"}]


def test_empty_last_header_is_kept() -> None:
    # panoramisk 1.4 drops this header; VarSet Value and Newexten AppData are often empty
    p = AmiParser()
    p.feed(b"Asterisk Call Manager/11.0.0\r\n")
    out = p.feed(
        b"Event: VarSet\r\nVariable: X\r\nValue: \r\n\r\nEvent: Newexten\r\nAppData:\r\n\r\n"
    )
    assert out == [
        {"Event": "VarSet", "Variable": "X", "Value": ""},
        {"Event": "Newexten", "AppData": ""},
    ]


def test_utf8_character_split_across_reads_survives() -> None:
    data = "Asterisk Call Manager/11.0.0\r\nEvent: Newchannel\r\nCallerIDName: Jürgen Müß\r\n\r\n"
    raw = data.encode()
    cut = raw.index("ü".encode()) + 1  # in the middle of the two-byte sequence
    p = AmiParser()
    assert p.feed(raw[:cut]) == []
    out = p.feed(raw[cut:])
    assert out == [{"Event": "Newchannel", "CallerIDName": "Jürgen Müß"}]
    assert p.stats.bad_utf8 == 0


def test_non_utf8_bytes_are_replaced_and_counted_and_the_message_kept() -> None:
    p = AmiParser()
    out = p.feed(b"banner\r\nEvent: Newchannel\r\nCallerIDName: J\xfcrgen\r\n\r\nEvent: Ok\r\n\r\n")
    assert [m["Event"] for m in out] == ["Newchannel", "Ok"]
    assert out[0]["CallerIDName"] == "J\ufffdrgen"
    assert p.stats.bad_utf8 == 1


def test_garbage_lines_are_skipped_and_counted() -> None:
    p = AmiParser()
    out = p.feed(b"banner\r\nthis is not a header\r\nEvent: Hangup\r\n\r\n\r\n\r\nnoise\r\n\r\n")
    assert out == [{"Event": "Hangup"}]
    assert p.stats.bad_lines == 2


def test_repeated_headers_are_joined() -> None:
    p = AmiParser()
    out = p.feed(b"b\r\nResponse: Success\r\nOutput: line 1\r\nOutput: line 2\r\n\r\n")
    assert out[0]["Output"] == "line 1\nline 2"


def test_oversized_unterminated_frame_is_dropped_and_parsing_recovers() -> None:
    p = AmiParser()
    p.feed(b"banner\r\n")
    assert p.feed(b"X: " + b"a" * (MAX_FRAME_BYTES + 10)) == []
    assert p.stats.dropped_frames == 1
    assert p.feed(b"Event: Ping\r\n\r\n") == [{"Event": "Ping"}]


def test_peer_without_banner_still_parses() -> None:
    p = AmiParser()
    assert p.feed(b"Event: FullyBooted\r\n\r\n") == [{"Event": "FullyBooted"}]


@pytest.mark.parametrize("trace", sorted(TRACES.glob("*.ami")), ids=lambda p: p.name)
def test_every_trace_frames_identically_in_one_read_and_byte_by_byte(trace: Path) -> None:
    data = wire_bytes(trace)
    whole = AmiParser().feed(data)
    p = AmiParser()
    pieces = []
    for i in range(0, len(data), 7):
        pieces.extend(p.feed(data[i : i + 7]))
    assert pieces == whole
    assert [m for _, m in read_trace(trace)] == whole
    assert p.stats.bad_lines == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_raise(data: bytes, step: int) -> None:
    p = AmiParser()
    for i in range(0, len(data), step):
        for msg in p.feed(data[i : i + step]):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in msg.items())


def test_events_not_kept_are_dropped_unless_they_answer_an_action() -> None:
    p = AmiParser(frozenset({"Hangup"}))
    out = p.feed(
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Event: DeviceStateChange\r\nDevice: PJSIP/1001\r\nState: INUSE\r\n\r\n"
        b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n"
        b"Event: DeviceStateChange\r\nActionID: 7\r\nDevice: PJSIP/1002\r\n\r\n"
        b"Response: Success\r\nActionID: 8\r\n\r\n"
        b"Event: Hangup\r\n\r\nEvent: Hangu\r\n\r\n"
    )
    assert out == [
        {"Event": "Hangup", "Uniqueid": "1.1"},
        {"Event": "DeviceStateChange", "ActionID": "7", "Device": "PJSIP/1002"},
        {"Response": "Success", "ActionID": "8"},
        {"Event": "Hangup"},
    ]
    assert p.stats.skipped == 2 and p.stats.messages == 4


@pytest.mark.parametrize("trace", sorted(TRACES.glob("*.ami")), ids=lambda p: p.name)
def test_dropping_what_the_tracker_ignores_changes_none_of_its_call_events(trace: Path) -> None:
    """The daemon's links drop, while framing, every event the call tracker has no handler
    for; the call events of every recorded trace must stay exactly the same."""
    data = wire_bytes(trace)

    def call_events(keep: frozenset[str] | None) -> list[object]:
        tracker = CallTracker(local_endpoints=LAB_ENDPOINTS)
        out: list[object] = []
        parser = AmiParser(keep)
        for msg in parser.feed(data):
            out += tracker.feed(msg, 0.0)
        out += tracker.flush()
        return out

    keep = CallTracker(local_endpoints=()).events
    assert call_events(keep) == call_events(None)
