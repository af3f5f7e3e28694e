"""The one way to build an AMI action.

Every action we send goes through `build_action`, because text from outside (a number typed by
an agent, a CRM field, a CSV cell) ends up in action headers, and a CR or LF in a header value
would let it inject headers or whole actions into the AMI stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_FORBIDDEN = ("\r", "\n", "\x00")

#: Actions that are safe to send again after a reconnect when no response came back.
#: Anything else (Originate, Redirect, Hangup, QueueAdd...) may already have run on the PBX.
IDEMPOTENT_ACTIONS = frozenset(
    {
        "ping",
        "login",
        "logoff",
        "events",
        "corestatus",
        "coresettings",
        "coreshowchannels",
        "status",
        "queuestatus",
        "queuesummary",
        "bridgelist",
        "getvar",
        "listcommands",
    }
)


class ActionError(ValueError):
    """An action could not be built from the given text (it names the header and the reason)."""


@dataclass(frozen=True, slots=True)
class Action:
    """A validated AMI action; `headers` keeps order and allows repeats (Variable)."""

    name: str
    headers: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        # An Action may also be constructed directly (the link adds its ActionID that way):
        # the injection check must hold for every instance, not only for build_action's.
        _check("action name", self.name)
        for k, v in self.headers:
            _check(f"header name {k!r}", k)
            _check(f"header {k!r}", v)

    @property
    def action_id(self) -> str | None:
        for k, v in self.headers:
            if k == "ActionID":
                return v
        return None

    @property
    def idempotent(self) -> bool:
        return self.name.lower() in IDEMPOTENT_ACTIONS

    def encode(self) -> bytes:
        return ("".join(f"{k}: {v}\r\n" for k, v in self.headers) + "\r\n").encode("utf-8")


def _check(where: str, text: str) -> str:
    for ch in _FORBIDDEN:
        if ch in text:
            raise ActionError(f"{where}: control character {ch!r} is not allowed in AMI text")
    return text


def build_action(
    name: str,
    fields: Mapping[str, object] | None = None,
    *,
    variables: Mapping[str, object] | None = None,
) -> Action:
    """Build an action, refusing CR, LF and NUL anywhere, and commas in variable values
    (Asterisk splits a `Variable:` header on commas, so `A=x,y` would silently set A=x)."""
    _check("action name", name)
    if not name or ":" in name or " " in name:
        raise ActionError(f"action name {name!r} is not a valid AMI action name")
    headers: list[tuple[str, str]] = [("Action", name)]
    for key, value in (fields or {}).items():
        if value is None:
            continue
        _check(f"header name {key!r}", key)
        if not key or ":" in key or key.lower() == "action":
            raise ActionError(f"header name {key!r} is not allowed")
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        headers.append((key, _check(f"header {key!r}", text)))
    for var, value in (variables or {}).items():
        _check(f"variable name {var!r}", var)
        if not var or "=" in var or "," in var:
            raise ActionError(f"variable name {var!r} is not allowed")
        text = _check(f"variable {var!r}", str(value))
        if "," in text:
            raise ActionError(f"variable {var!r}: commas are not allowed (Asterisk splits on them)")
        headers.append(("Variable", f"{var}={text}"))
    return Action(name=name, headers=tuple(headers))
