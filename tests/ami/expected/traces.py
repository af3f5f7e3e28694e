"""What each shared trace must produce, written by hand from reading the trace (see
tests/traces/README-upstream.md and the scenario notes in /work/shared/ami-traces/README.md).

Replayed with the lab's Local endpoint patterns (LAB_ENDPOINTS): the caller's phone is
`Local/8xx@inbound-…;1`, an agent's phone the `;2` half running [agents], the pstn customer
`Local/…@pstn-…;2`, the attended-transfer target `Local/…@xfer-…;2`.

Compact forms (see test_replay_traces.compact):
  ("originate_result", action_id, result, cause)
  ("ringing", caller channel, caller number, (target channels,), queue)
  ("ringing_end", (target channels,), reason)
  ("up", caller channel, callee channel)
  ("transfer", kind, caller channel, transferer channel, (target channels,))
  ("hangup", caller channel, caller number, reason, cause)
  ("queue_abandon", caller channel, queue)
"""

from __future__ import annotations

LAB_ENDPOINTS = [
    "Local/*@inbound-*;1",
    "Local/*@agents-*;2",
    "Local/*@pstn-*;2",
    "Local/*@xfer-*;2",
]


def _in(n: str, ext: str = "800") -> str:
    return f"Local/{ext}@inbound-{n};1"


def _ag(agent: int, n: str) -> str:
    return f"Local/agent{agent}@agents-{n};2"


EXPECTED: dict[str, list[tuple[object, ...]]] = {
    # login, actions, a sync Originate that fails (no OriginateResponse: nothing), an async one
    # to a missing context (Reason 0, Cdr FAILED, causes 0) and one to an unknown technology
    # (no channel at all): both are failures without a cause
    "00-basics.ami": [
        ("originate_result", "bad-async", "failed", None),
        ("originate_result", "bad-tech", "failed", None),
    ],
    "00-bad-login.ami": [],
    # caller rings agent1 via queue support, agent1 answers after 2 s, caller hangs up (Cause 0)
    "01-inbound-queue-agent1-answers.ami": [
        ("originate_result", "s01-in", "answered", None),
        ("ringing", _in("00000002"), "+4930123456", (_ag(1, "00000003"),), "support"),
        ("ringing_end", (_ag(1, "00000003"),), "answer"),
        ("up", _in("00000002"), _ag(1, "00000003")),
        ("hangup", _in("00000002"), "+4930123456", "completed", 0),
    ],
    # agent1 rings 5 s without answer (NOANSWER, then a repeated CANCEL: one ringing_end),
    # agent2 rings and answers, caller hangs up
    "02-inbound-queue-ringnoanswer-agent2-answers.ami": [
        ("originate_result", "s02-in", "answered", None),
        ("ringing", _in("00000004"), "+4930123457", (_ag(1, "00000005"),), "support"),
        ("ringing_end", (_ag(1, "00000005"),), "noanswer"),
        ("ringing", _in("00000004"), "+4930123457", (_ag(2, "00000006"),), "support"),
        ("ringing_end", (_ag(2, "00000006"),), "answer"),
        ("up", _in("00000004"), _ag(2, "00000006")),
        ("hangup", _in("00000004"), "+4930123457", "completed", 0),
    ],
    # caller hangs up while agent1 rings: cancelled, the ring ends with CANCEL, abandon
    "03-inbound-queue-caller-abandons.ami": [
        ("originate_result", "s03-in", "answered", None),
        ("ringing", _in("00000007"), "+4930123458", (_ag(1, "00000008"),), "support"),
        ("hangup", _in("00000007"), "+4930123458", "cancelled", 0),
        ("ringing_end", (_ag(1, "00000008"),), "cancel"),
        ("queue_abandon", _in("00000007"), "support"),
    ],
    # call A without caller ID (number ""), call B "Anonymous" <anonymous> to 801
    "04-inbound-anonymous-callerid.ami": [
        ("originate_result", "s04-nocid", "answered", None),
        ("ringing", _in("00000009"), "", (_ag(1, "0000000a"),), "support"),
        ("ringing_end", (_ag(1, "0000000a"),), "answer"),
        ("up", _in("00000009"), _ag(1, "0000000a")),
        ("hangup", _in("00000009"), "", "completed", 0),
        ("originate_result", "s04-anon", "answered", None),
        ("ringing", _in("0000000b", "801"), "anonymous", (_ag(1, "0000000c"),), "support"),
        ("ringing_end", (_ag(1, "0000000c"),), "answer"),
        ("up", _in("0000000b", "801"), _ag(1, "0000000c")),
        ("hangup", _in("0000000b", "801"), "anonymous", "completed", 0),
    ],
    # dialer Originate: the customer (pstn;2) answers and becomes the caller of the onward call
    # into queue support; the originated leg itself rings nobody; the customer hangs up (16).
    # Its number is the lead's, set by [dialer] on the originated ;1 (the caller ID the far
    # side sees for a Local ;2 endpoint is its ;1 half's)
    "05-outbound-dialer-answered-to-queue.ami": [
        ("originate_result", "dialer-c1-42", "answered", None),
        (
            "ringing",
            "Local/+4930555101@pstn-0000000d;2",
            "+4930555101",
            ("Local/agent1@agents-0000000e;2",),
            "support",
        ),
        ("ringing_end", ("Local/agent1@agents-0000000e;2",), "answer"),
        ("up", "Local/+4930555101@pstn-0000000d;2", "Local/agent1@agents-0000000e;2"),
        ("hangup", "Local/+4930555101@pstn-0000000d;2", "+4930555101", "completed", 16),
    ],
    # busy customer: only the originate's outcome, Reason 5, customer Cause 17
    "06-outbound-busy.ami": [("originate_result", "dialer-c1-43", "busy", 17)],
    # no answer within the Originate timeout: Reason 3, Cause 19
    "07-outbound-no-answer.ami": [("originate_result", "dialer-c1-44", "no-answer", 19)],
    # congestion: Reason 8 arrives before the channel events; Cause 34
    "08-outbound-congestion.ami": [("originate_result", "dialer-c1-45", "congestion", 34)],
    # Redirect of the caller's inbound leg to 810 (sales) while agent1 is still connected:
    # a blind transfer by agent1, reported when agent3 rings, then up again with agent3
    "09a-blind-transfer-redirect.ami": [
        ("originate_result", "s09a-in", "answered", None),
        ("ringing", _in("00000012"), "+4930123460", (_ag(1, "00000013"),), "support"),
        ("ringing_end", (_ag(1, "00000013"),), "answer"),
        ("up", _in("00000012"), _ag(1, "00000013")),
        ("transfer", "blind", _in("00000012"), _ag(1, "00000013"), (_ag(3, "00000014"),)),
        ("ringing", _in("00000012"), "+4930123460", (_ag(3, "00000014"),), "sales"),
        ("ringing_end", (_ag(3, "00000014"),), "answer"),
        ("up", _in("00000012"), _ag(3, "00000014")),
        ("hangup", _in("00000012"), "+4930123460", "completed", 0),
    ],
    # BlindTransfer action by agent1 to 810: the same picture as 09a
    "09b-blind-transfer-action.ami": [
        ("originate_result", "s09b-in", "answered", None),
        ("ringing", _in("00000015"), "+4930123461", (_ag(1, "00000016"),), "support"),
        ("ringing_end", (_ag(1, "00000016"),), "answer"),
        ("up", _in("00000015"), _ag(1, "00000016")),
        ("transfer", "blind", _in("00000015"), _ag(1, "00000016"), (_ag(3, "00000017"),)),
        ("ringing", _in("00000015"), "+4930123461", (_ag(3, "00000017"),), "sales"),
        ("ringing_end", (_ag(3, "00000017"),), "answer"),
        ("up", _in("00000015"), _ag(3, "00000017")),
        ("hangup", _in("00000015"), "+4930123461", "completed", 0),
    ],
    # Atxfer by agent1 to 2002 (agent2 via [xfer]): the consult target rings (no DialBegin,
    # only Newstate), answers, agent1 hangs up -> attended transfer; no second "up" (the
    # transfer itself says who talks now), no hangup for agent1's legs
    "09c-attended-transfer-atxfer.ami": [
        ("originate_result", "s09c-in", "answered", None),
        ("ringing", _in("00000018"), "+4930123462", (_ag(1, "00000019"),), "support"),
        ("ringing_end", (_ag(1, "00000019"),), "answer"),
        ("up", _in("00000018"), _ag(1, "00000019")),
        ("ringing", _in("00000018"), "+4930123462", ("Local/2002@xfer-0000001a;2",), None),
        ("ringing_end", ("Local/2002@xfer-0000001a;2",), "answer"),
        (
            "transfer",
            "attended",
            _in("00000018"),
            _ag(1, "00000019"),
            ("Local/2002@xfer-0000001a;2",),
        ),
        ("hangup", _in("00000018"), "+4930123462", "completed", 0),
    ],
    # 10 (burst) is checked by a dedicated test: 50 answered originates, 50 hangups
    # two callers: A connected to agent1, B ringing agent2 (no answer) and abandoning
    "11-status-snapshot-during-calls.ami": [
        ("originate_result", "s11-a", "answered", None),
        ("ringing", _in("0000004d"), "+4930123463", (_ag(1, "0000004e"),), "support"),
        ("ringing_end", (_ag(1, "0000004e"),), "answer"),
        ("up", _in("0000004d"), _ag(1, "0000004e")),
        ("originate_result", "s11-b", "answered", None),
        ("ringing", _in("0000004f"), "+4930123464", (_ag(2, "00000050"),), "support"),
        ("ringing_end", (_ag(2, "00000050"),), "noanswer"),
        ("hangup", _in("0000004f"), "+4930123464", "cancelled", 0),
        ("queue_abandon", _in("0000004f"), "support"),
        ("hangup", _in("0000004d"), "+4930123463", "completed", 0),
    ],
    # OriginateResponse Reason 0 for all three: only the evidence tells them apart
    # (Cause 1 unallocated -> failed, 17 -> busy, 34 -> congestion)
    "12-outbound-hangup-causes.ami": [
        ("originate_result", "dialer-c1-46", "failed", 1),
        ("originate_result", "dialer-c1-47", "busy", 17),
        ("originate_result", "dialer-c1-48", "congestion", 34),
    ],
    # queue member management only: no call
    "13-queue-member-management.ami": [],
    # agent1 hangs up first; the caller's side then hangs up with Cause 16: still "completed"
    "14-inbound-agent-hangs-up.ami": [
        ("originate_result", "s14-in", "answered", None),
        ("ringing", _in("00000054"), "+4930123456", (_ag(1, "00000055"),), "support"),
        ("ringing_end", (_ag(1, "00000055"),), "answer"),
        ("up", _in("00000054"), _ag(1, "00000055")),
        ("hangup", _in("00000054"), "+4930123456", "completed", 16),
    ],
}
