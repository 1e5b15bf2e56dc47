"""Configuration: defaults, YAML, environment overrides, clear errors, first-start credentials."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from workers.bootstrap import ensure_credentials
from workers.config import ENV_KEYS, ConfigError, load_settings


def test_defaults_without_any_configuration(tmp_path: Path) -> None:
    settings = load_settings(None, {"RW_DATA_DIR": str(tmp_path)})
    assert settings.listen == "127.0.0.1:8080"
    assert settings.region == "region-a"
    assert settings.project_id == "default" and settings.instance_id == "local"
    assert settings.database_url == f"sqlite+aiosqlite:///{(tmp_path / 'registry-workers.db').resolve()}"
    assert settings.kafka.bundled and settings.kafka.producer_idempotence() is False


def test_yaml_then_environment_overrides(tmp_path: Path) -> None:
    config = tmp_path / "rw.yaml"
    config.write_text(
        "listen: 127.0.0.1:9000\nregion: region-b\n"
        "regions:\n  region-b: {registry: 'http://127.0.0.1:5000/', insecure: true}\n"
        "kafka: {bootstrap: 'k:9092', partitions: 3}\n"
    )
    env = {"RW_LISTEN": "0.0.0.0:8181", "RW_DATABASE_URL": "postgresql://u@h:5432/db"}
    settings = load_settings(config, env)
    assert settings.listen == "0.0.0.0:8181"
    assert settings.region == "region-b"
    assert settings.regions["region-b"].registry == "http://127.0.0.1:5000"
    assert settings.database_url == "postgresql+asyncpg://u@h:5432/db"
    assert settings.kafka.partitions == 3 and settings.kafka.producer_idempotence() is True


def test_config_path_from_rw_config(tmp_path: Path) -> None:
    config = tmp_path / "rw.yaml"
    config.write_text("project_id: p1\n")
    assert load_settings(None, {"RW_CONFIG": str(config)}).project_id == "p1"


@pytest.mark.parametrize(
    ("env", "yaml_text", "expected"),
    [
        ({"RW_LISTEN": "8080"}, "", "RW_LISTEN (listen)"),
        ({"RW_LISTEN": "host:99999"}, "", "RW_LISTEN (listen)"),
        ({"RW_DATABASE_URL": "mysql://x"}, "", "RW_DATABASE_URL (database_url)"),
        ({"RW_REGION": "Region A"}, "", "RW_REGION (region)"),
        ({"RW_KAFKA_PARTITIONS": "zero"}, "", "RW_KAFKA_PARTITIONS (kafka.partitions)"),
        ({"RW_KAFKA_IDEMPOTENCE": "maybe"}, "", "RW_KAFKA_IDEMPOTENCE (kafka.idempotence)"),
        ({}, "regions: {region-b: {registry: 'ftp://x'}}\n", "regions.region-b.registry"),
        ({}, "regions: {region-b: {registry: 'http://x', pasword: y}}\n", "regions.region-b.pasword: unknown setting"),
        ({}, "lisen: 1\n", "lisen: unknown setting"),
        ({}, "- a list\n", "must hold a mapping"),
        ({}, "a: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configuration_names_the_key(
    tmp_path: Path, env: dict[str, str], yaml_text: str, expected: str
) -> None:
    config = tmp_path / "rw.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env)
    assert expected in str(caught.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RW_CONFIG: cannot read"):
        load_settings(tmp_path / "absent.yaml", {})


def test_first_start_generates_credentials_once(tmp_path: Path) -> None:
    settings = load_settings(None, {"RW_DATA_DIR": str(tmp_path)})
    out = io.StringIO()
    first = ensure_credentials(settings, out)
    assert first.ingress_token and first.admin_access_key and first.admin_secret_key
    assert first.admin_secret_key in out.getvalue()
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    again = io.StringIO()
    second = ensure_credentials(settings, again)
    assert again.getvalue() == ""
    assert (second.ingress_token, second.admin_access_key) == (first.ingress_token, first.admin_access_key)
    stored = json.loads((tmp_path / "credentials.json").read_text())
    assert stored["admin_secret_key"] == first.admin_secret_key


def test_configured_credentials_win_and_half_a_key_is_refused(tmp_path: Path) -> None:
    env = {"RW_DATA_DIR": str(tmp_path), "RW_INGRESS_TOKEN": "tok", "RW_ADMIN_ACCESS_KEY": "AK"}
    with pytest.raises(ConfigError, match="RW_ADMIN_SECRET_KEY"):
        ensure_credentials(load_settings(None, env), io.StringIO())
    env["RW_ADMIN_SECRET_KEY"] = "SK"
    settings = ensure_credentials(load_settings(None, env), io.StringIO())
    assert (settings.ingress_token, settings.admin_access_key, settings.admin_secret_key) == ("tok", "AK", "SK")
    assert not (tmp_path / "credentials.json").exists()


def test_every_environment_setting_is_in_the_readme_table() -> None:
    """Each ``RW_*`` variable has a row naming it and its YAML key in the README's settings table."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `RW_")}
    missing = [name for name in ENV_KEYS if name not in rows]
    assert not missing, f"not documented in the README: {missing}"
    wrong = [name for name, key in ENV_KEYS.items() if f"`{key}`" not in rows[name]]
    assert not wrong, f"README rows without their YAML key: {wrong}"


def readme_defaults() -> dict[str, str]:
    """The settings table's ``key → default`` where both cells hold one plain value (``key`` | ``value``)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    defaults: dict[str, str] = {}
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) < 3 or not (cells[0] == "—" or cells[0].startswith("`RW_")):
            continue
        key, default = cells[1], cells[2]
        if key.count("`") == default.count("`") == 2 and default.startswith("`") and default.endswith("`"):
            defaults[key.strip("`")] = default.strip("`")
    return defaults


def states(stated: str, value: object) -> bool:
    """Whether the README's ``stated`` default is ``value``, written as the table writes it."""
    if isinstance(value, bool):
        return stated == str(value).lower()
    if isinstance(value, int | float):
        return float(stated) == value
    if isinstance(value, Path):
        return Path(stated) == value
    if isinstance(value, list | tuple):
        return stated == json.dumps(list(value))
    return stated == str(value)


def test_the_readme_table_states_the_code_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    documented = readme_defaults()
    assert len(documented) > 30, documented  # the table was parsed
    wrong = {}
    for key, stated in documented.items():
        value: object = settings
        for part in key.split("."):
            value = getattr(value, part)
        if not states(stated, value):
            wrong[key] = (stated, value)
    assert not wrong, f"README default differs from the code (stated, actual): {wrong}"
