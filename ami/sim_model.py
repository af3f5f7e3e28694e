"""State of the simulated PBX: channels, bridges, queues and their members, plus the text
blocks Asterisk 22 repeats in almost every event.

The simulator writes each event as text once and sends the same bytes to every client, so the
helpers here return ready-to-join `Key: Value\\r\\n` strings rather than dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Privilege classes, as bits for per-client event masks (Login `Events:`).
CALL = 1
DIALPLAN = 2
AGENT = 4
CDR = 8
SYSTEM = 16
SECURITY = 32
USER = 64
ALL_CLASSES = CALL | DIALPLAN | AGENT | CDR | SYSTEM | SECURITY | USER

CLASS_BITS = {
    "call": CALL,
    "dialplan": DIALPLAN,
    "agent": AGENT,
    "cdr": CDR,
    "system": SYSTEM,
    "security": SECURITY,
    "user": USER,
    "all": ALL_CLASSES,
    "on": ALL_CLASSES,
}

PRIV = {
    CALL: "call,all",
    DIALPLAN: "dialplan,all",
    AGENT: "agent,all",
    CDR: "cdr,all",
    SYSTEM: "system,all",
    SECURITY: "security,all",
    USER: "user,all",
}

STATE_DESC = {
    0: "Down",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
}
DOWN, RING, RINGING, UP, BUSY = 0, 4, 5, 6, 7

CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    22: "Number changed",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format (incomplete number)",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    127: "Interworking, unspecified",
}


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


def parse_mask(value: str) -> int:
    """`Events:` of Login/Events: on, off, or a comma list of classes."""
    v = value.strip().lower()
    if v in ("", "on", "yes", "true", "1"):
        return ALL_CLASSES
    if v in ("off", "no", "false", "0"):
        return 0
    bits = 0
    for part in v.split(","):
        bits |= CLASS_BITS.get(part.strip(), 0)
    return bits


@dataclass(slots=True, eq=False)
class Chan:
    """One simulated channel. `role` is "caller" (trunk/customer side of a call) or "agent"."""

    name: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    created: float
    role: str = "caller"
    state: int = DOWN
    cid_num: str = "<unknown>"
    cid_name: str = "<unknown>"
    con_num: str = "<unknown>"
    con_name: str = "<unknown>"
    priority: int = 1
    app: str = ""
    appdata: str = ""
    answered: float | None = None
    bridge: Bridge | None = None
    device: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    alive: bool = True

    def block(self) -> str:
        return (
            f"Channel: {self.name}\r\nChannelState: {self.state}\r\n"
            f"ChannelStateDesc: {STATE_DESC[self.state]}\r\n"
            f"CallerIDNum: {self.cid_num}\r\nCallerIDName: {self.cid_name}\r\n"
            f"ConnectedLineNum: {self.con_num}\r\nConnectedLineName: {self.con_name}\r\n"
            f"Language: en\r\nAccountCode: \r\nContext: {self.context}\r\n"
            f"Exten: {self.exten}\r\nPriority: {self.priority}\r\n"
            f"Uniqueid: {self.uniqueid}\r\nLinkedid: {self.linkedid}\r\n"
        )

    def dest_block(self) -> str:
        return (
            f"DestChannel: {self.name}\r\nDestChannelState: {self.state}\r\n"
            f"DestChannelStateDesc: {STATE_DESC[self.state]}\r\n"
            f"DestCallerIDNum: {self.cid_num}\r\nDestCallerIDName: {self.cid_name}\r\n"
            f"DestConnectedLineNum: {self.con_num}\r\nDestConnectedLineName: {self.con_name}\r\n"
            f"DestLanguage: en\r\nDestAccountCode: \r\nDestContext: {self.context}\r\n"
            f"DestExten: {self.exten}\r\nDestPriority: {self.priority}\r\n"
            f"DestUniqueid: {self.uniqueid}\r\nDestLinkedid: {self.linkedid}\r\n"
        )

    def prefixed_block(self, prefix: str) -> str:
        return (
            f"{prefix}Channel: {self.name}\r\n{prefix}ChannelState: {self.state}\r\n"
            f"{prefix}ChannelStateDesc: {STATE_DESC[self.state]}\r\n"
            f"{prefix}CallerIDNum: {self.cid_num}\r\n{prefix}CallerIDName: {self.cid_name}\r\n"
            f"{prefix}ConnectedLineNum: {self.con_num}\r\n"
            f"{prefix}ConnectedLineName: {self.con_name}\r\n"
            f"{prefix}Language: en\r\n{prefix}AccountCode: \r\n{prefix}Context: {self.context}\r\n"
            f"{prefix}Exten: {self.exten}\r\n{prefix}Priority: {self.priority}\r\n"
            f"{prefix}Uniqueid: {self.uniqueid}\r\n{prefix}Linkedid: {self.linkedid}\r\n"
        )


@dataclass(slots=True, eq=False)
class Bridge:
    uniqueid: str
    channels: list[Chan] = field(default_factory=list)

    def block(self, prefix: str = "") -> str:
        p = prefix
        return (
            f"{p}BridgeUniqueid: {self.uniqueid}\r\n{p}BridgeType: basic\r\n"
            f"{p}BridgeTechnology: simple_bridge\r\n{p}BridgeCreator: <unknown>\r\n"
            f"{p}BridgeName: <unknown>\r\n{p}BridgeNumChannels: {len(self.channels)}\r\n"
            f"{p}BridgeVideoSourceMode: none\r\n"
        )


@dataclass(slots=True, eq=False)
class Member:
    """A queue member, as QueueAdd created it. `in_call` is true while the member's device is
    connected to a call (any queue or a direct call); `ringing` while it rings for one."""

    queue: str
    interface: str
    name: str
    penalty: int = 0
    paused: bool = False
    reason: str = ""
    in_call: bool = False
    ringing: bool = False
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = 0
    membership: str = "dynamic"
    #: device state code for QueueMember/QueueMemberStatus: 1 not in use, 2 in use, 6 ringing
    status: int = 1

    def event_fields(self) -> str:
        return (
            f"Queue: {self.queue}\r\nMemberName: {self.name}\r\nInterface: {self.interface}\r\n"
            f"StateInterface: {self.interface}\r\nMembership: {self.membership}\r\n"
            f"Penalty: {self.penalty}\r\nCallsTaken: {self.calls_taken}\r\n"
            f"LastCall: {self.last_call}\r\nLastPause: {self.last_pause}\r\n"
            f"LoginTime: {self.login_time}\r\nInCall: {int(self.in_call)}\r\n"
            f"Status: {self.status}\r\nPaused: {int(self.paused)}\r\n"
            f"PausedReason: {self.reason}\r\nRinginuse: 0\r\nWrapuptime: 0\r\n"
        )

    def list_fields(self) -> str:
        """QueueStatus list item: `Name`/`Location` instead of `MemberName`/`Interface`."""
        return (
            f"Queue: {self.queue}\r\nName: {self.name}\r\nLocation: {self.interface}\r\n"
            f"StateInterface: {self.interface}\r\nMembership: {self.membership}\r\n"
            f"Penalty: {self.penalty}\r\nCallsTaken: {self.calls_taken}\r\n"
            f"LastCall: {self.last_call}\r\nLastPause: {self.last_pause}\r\n"
            f"LoginTime: {self.login_time}\r\nInCall: {int(self.in_call)}\r\n"
            f"Status: {self.status}\r\nPaused: {int(self.paused)}\r\n"
            f"PausedReason: {self.reason}\r\nWrapuptime: 0\r\n"
        )


@dataclass(slots=True, eq=False)
class Queue:
    name: str
    strategy: str = "rrmemory"
    members: list[Member] = field(default_factory=list)
    #: calls waiting, in position order
    waiting: list[Call] = field(default_factory=list)
    rr_next: int = 0
    completed: int = 0
    abandoned: int = 0
    holdtime_total: float = 0.0
    talktime_total: float = 0.0

    def member(self, interface: str) -> Member | None:
        for m in self.members:
            if m.interface == interface:
                return m
        return None


@dataclass(slots=True, eq=False)
class Leg:
    """An agent leg being rung for a call (by a queue or a direct Dial)."""

    chan: Chan
    member: Member | None
    started: float
    state: str = "ringing"  # ringing, up, gone


@dataclass(slots=True, eq=False)
class Call:
    """Everything that belongs to one Linkedid."""

    linkedid: str
    caller: Chan
    started: float
    #: "inbound", "outbound" (Originate to a customer), "click" (Originate of an agent device)
    kind: str = "inbound"
    queue: Queue | None = None
    queue_joined: float = 0.0
    queue_deadline: float | None = None
    legs: list[Leg] = field(default_factory=list)
    agent: Leg | None = None
    connected_at: float = 0.0
    #: virtual time at which the caller hangs up (None: talk time is drawn at connect)
    hangup_at: float | None = None
    talk: float | None = None
    done: bool = False
    retry_pending: bool = False
    #: (dest channel name, disposition, answered) per dial attempt, for the caller's Cdrs
    cdrs: list[tuple[str, str, float | None, float]] = field(default_factory=list)
    #: AgentComplete lines still owed after a Redirect (queue, interface, name, hold, start)
    owed_complete: list[tuple[str, str, str, int, float]] = field(default_factory=list)
    #: originate bookkeeping
    action_id: str = ""
    originate_channel: str = ""
    originate_tail: str = ""
    originate_cid: tuple[str, str] = ("<unknown>", "<unknown>")
    customer: Chan | None = None
    generation: int = 0
    #: the dialled number is an answering machine (AMD reports MACHINE)
    machine: bool = False
    #: devices this call holds busy (ringing or talking)
    devices: set[str] = field(default_factory=set)
