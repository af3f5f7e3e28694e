"""Channel-name helpers shared by the tracker, the agent registry and the simulator.

Asterisk names a channel `<device>-<8 hex>` (`PJSIP/1001-0000002a`), Local channels
`Local/<exten>@<context>-<8 hex>;<1|2>`. An agent logs in with a device (`PJSIP/1001`), so the
device must be cut off exactly: `SIP/10` must never match `SIP/100-00000001`.
"""

from __future__ import annotations


def device_of(channel: str) -> str:
    """`PJSIP/1001-0000002a` -> `PJSIP/1001`; `Local/agent1@agents-00000003;1` ->
    `Local/agent1@agents`; a name without the suffix is returned unchanged."""
    name = channel
    if name.startswith("Local/"):
        semi = name.rfind(";")
        if semi > 0:
            name = name[:semi]
    dash = name.rfind("-")
    if dash > 0 and len(name) - dash - 1 >= 1 and _is_hex(name[dash + 1 :]) and "/" in name[:dash]:
        return name[:dash]
    return name


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def is_local(channel: str) -> bool:
    return channel.startswith("Local/")


def local_peer(channel: str) -> str | None:
    """The other half of a Local pair (`...;1` <-> `...;2`), or None for other channels."""
    if not channel.startswith("Local/") or len(channel) < 2 or channel[-2] != ";":
        return None
    last = channel[-1]
    if last == "1":
        return channel[:-1] + "2"
    if last == "2":
        return channel[:-1] + "1"
    return None
