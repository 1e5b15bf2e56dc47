"""First-start credentials: never an open door by default.

With no ingress token or admin key configured, the first start generates them, keeps them in
``<data_dir>/credentials.json`` (mode 0600) and prints them once; later starts read the file.
Configured values always win over the file.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from pathlib import Path
from typing import TextIO

from workers.config import ConfigError, Settings

CREDENTIALS_FILE = "credentials.json"
_AK_ALPHABET = string.ascii_uppercase + string.digits


def ensure_credentials(settings: Settings, out: TextIO = sys.stdout) -> Settings:
    """Fill in missing credentials from the data dir, generating and printing them once."""
    if bool(settings.admin_access_key) != bool(settings.admin_secret_key):
        missing = "RW_ADMIN_SECRET_KEY" if settings.admin_access_key else "RW_ADMIN_ACCESS_KEY"
        raise ConfigError(f"invalid configuration: {missing}: required when the other half of the admin key is set")
    if settings.ingress_token and settings.admin_access_key:
        return settings
    path = settings.data_dir / CREDENTIALS_FILE
    stored = _load(path)
    generated = not stored
    if generated:
        stored = {
            "ingress_token": secrets.token_urlsafe(32),
            "admin_access_key": "".join(secrets.choice(_AK_ALPHABET) for _ in range(20)),
            "admin_secret_key": secrets.token_urlsafe(30),
        }
        _store(path, stored)
    updates = {key: value for key, value in stored.items() if not getattr(settings, key)}
    if settings.admin_access_key:  # configured admin key: keep both halves from configuration
        updates.pop("admin_access_key", None)
        updates.pop("admin_secret_key", None)
    if generated:
        _announce(out, path, updates)
    return settings.model_copy(update=updates)


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: RW_DATA_DIR: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"invalid configuration: RW_DATA_DIR: {path} is not a credentials file")
    return data


def _store(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)


def _announce(out: TextIO, path: Path, values: dict[str, str]) -> None:
    names = {
        "ingress_token": "RW_INGRESS_TOKEN",
        "admin_access_key": "RW_ADMIN_ACCESS_KEY",
        "admin_secret_key": "RW_ADMIN_SECRET_KEY",
    }
    lines = [f"  {names[key]}={value}" for key, value in values.items()]
    print(f"registry-workers: generated credentials (shown once; kept in {path}):", *lines, sep="\n", file=out)
    out.flush()
