"""Settings: defaults file, --config, CTI_ environment variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti.cli import main
from cti.settings import SettingsError, load_settings


def test_defaults_load_from_config_dir() -> None:
    s = load_settings(environ={})
    assert s.web.port == 8080
    assert s.ami.servers[0].name == "pbx1"
    assert s.crm.default_region == "DE"
    assert s.database_url().startswith("sqlite+aiosqlite:///")


def test_file_then_environment_override(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        '[web]\nport = 9000\n[[ami.servers]]\nname = "a"\nhost = "10.0.0.1"\n'
        '[[ami.servers]]\nname = "b"\nport = 5039\n'
    )
    s = load_settings(cfg, environ={"CTI_WEB__PORT": "9100", "CTI_CRM__DEFAULT_AREA": "89"})
    assert s.web.port == 9100
    assert [x.name for x in s.ami.servers] == ["a", "b"]
    assert s.ami.servers[1].port == 5039
    assert s.crm.default_area == "89"


def test_json_lists_from_environment() -> None:
    s = load_settings(
        environ={"CTI_AMI__SERVERS": '[{"name": "east", "host": "192.0.2.1", "secret": "s3"}]'}
    )
    assert s.ami.servers[0].name == "east"
    assert s.ami.servers[0].secret.get_secret_value() == "s3"
    assert "s3" not in repr(s)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"CTI_WEB__PORT": "http"}, "web.port"),
        ({"CTI_WEB__PORT": "70000"}, "web.port"),
        ({"CTI_LOG__LEVEL": "loud"}, "log.level"),
        ({"CTI_AMI__SERVERS": '[{"name": "a"}, {"name": "a"}]'}, "ami.servers"),
        ({"CTI_DIALER__RING_TIMEOUT": "5"}, "dialer.ring_timeout"),
        ({"CTI_WEB__NO_SUCH_KEY": "1"}, "web.no_such_key"),
    ],
)
def test_invalid_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(environ=env)
    assert key in str(e.value)


def test_broken_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[web\nport = 1")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_cli_stops_with_exit_code_2_and_names_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CTI_WEB__PORT", "not-a-port")
    assert main(["replay", "tests/traces/06-outbound-busy.ami"]) == 2
    err = capsys.readouterr().err
    assert "web.port" in err


def test_cli_without_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_test_suite_variables_are_not_settings() -> None:
    s = load_settings(environ={"CTI_TEST_PG_URL": "postgresql+asyncpg://x@127.0.0.1/y"})
    assert s.web.port == 8080
