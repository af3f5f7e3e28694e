"""Every AMI action is built by build_action, which must refuse header injection."""

from __future__ import annotations

import pytest

from ami.actions import ActionError, build_action


def test_builds_ordered_headers_with_repeated_variables() -> None:
    a = build_action(
        "Originate",
        {"Channel": "PJSIP/1001", "Async": True, "Timeout": 25000, "ActionID": "x-1"},
        variables={"__CAMPAIGN": "c1", "LEAD": 42},
    )
    assert a.encode() == (
        b"Action: Originate\r\nChannel: PJSIP/1001\r\nAsync: true\r\nTimeout: 25000\r\n"
        b"ActionID: x-1\r\nVariable: __CAMPAIGN=c1\r\nVariable: LEAD=42\r\n\r\n"
    )
    assert a.action_id == "x-1"
    assert not a.idempotent


@pytest.mark.parametrize("bad", ["1001\r\nAction: Hangup", "x\ny", "nul\x00", "cr\r"])
def test_control_characters_in_values_are_refused(bad: str) -> None:
    with pytest.raises(ActionError, match="control character"):
        build_action("Originate", {"Exten": bad})
    with pytest.raises(ActionError):
        build_action("Originate", variables={"NAME": bad})


def test_injection_in_header_names_and_action_name_is_refused() -> None:
    with pytest.raises(ActionError):
        build_action("Ping", {"X\r\nAction: Hangup": "1"})
    with pytest.raises(ActionError):
        build_action("Ping\r\nAction: Hangup")
    with pytest.raises(ActionError):
        build_action("Ping", {"Action": "Hangup"})
    with pytest.raises(ActionError):
        build_action("Ping", {"Bad:Name": "1"})


def test_commas_in_variable_values_are_refused_because_asterisk_splits_on_them() -> None:
    with pytest.raises(ActionError, match="commas"):
        build_action("Originate", variables={"A": "x,y"})
    with pytest.raises(ActionError):
        build_action("Originate", variables={"A=B": "x"})


def test_a_hand_built_action_is_checked_too() -> None:
    from ami.actions import Action

    with pytest.raises(ActionError):
        Action("Originate", (("Channel", "x\r\nAction: Hangup"),))
    with pytest.raises(ActionError):
        Action("Ping\n", ())


def test_read_only_actions_are_idempotent() -> None:
    assert build_action("QueueStatus").idempotent
    assert build_action("Ping").idempotent
    assert not build_action("Redirect").idempotent
