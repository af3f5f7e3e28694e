"""Prometheus text exposition of the daemon's counters (`GET /metrics`).

Every component keeps plain counters in a `stats` attribute (a dataclass or a dict); this
module flattens whatever numbers it finds into `cti_<component>_<name>` series, so adding a
counter to a component publishes it without touching this file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from ami.events import AgentStatus
from cti.services import Services

_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if obj is None:
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    elif not isinstance(obj, dict) and hasattr(obj, "__dict__"):
        obj = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _NAME_OK.sub("_", str(k))
            yield from _numbers(v, f"{prefix}_{key}" if prefix else key)
    elif isinstance(obj, bool):
        yield prefix, float(obj)
    elif isinstance(obj, int | float):
        yield prefix, float(obj)


def _series(name: str, obj: Any, labels: str = "") -> Iterator[str]:
    for key, value in _numbers(obj):
        yield f"cti_{name}_{key}{labels} {value:g}"


def render_metrics(services: Services) -> str:
    lines: list[str] = []
    lines.append("# TYPE cti_ami_link_up gauge")
    for name, link in services.links.items():
        lab = f'{{server="{_label(name)}"}}'
        lines.append(f"cti_ami_link_up{lab} {1 if link.connected else 0}")
        lines.extend(_series("ami", getattr(link, "stats", None), lab))
    for name, tracker in services.trackers.items():
        lab = f'{{server="{_label(name)}"}}'
        lines.extend(_series("tracker", getattr(tracker, "stats", None), lab))
    lines.extend(_series("bus", services.bus.stats()))
    lines.extend(_series("hub", getattr(services.hub, "stats", None)))
    lines.extend(_series("pops", getattr(services.pops, "stats", None)))
    counts = dict.fromkeys(AgentStatus, 0)
    for view in services.agents.views():
        status = view.status if isinstance(view.status, AgentStatus) else AgentStatus(view.status)
        counts[status] += 1
    lines.append("# TYPE cti_agents gauge")
    for status, n in counts.items():
        lines.append(f'cti_agents{{status="{status.value}"}} {n}')
    dialer = services.dialer
    if dialer is not None and hasattr(dialer, "metrics_lines"):
        lines.extend(dialer.metrics_lines())
    return "\n".join(lines) + "\n"
