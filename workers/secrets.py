"""Secrets at rest: authenticated encryption with Fernet, keys rotated with MultiFernet.

Webhook signing secrets and target credentials are stored encrypted with a ``SecretBox``. The
keys come from configuration (``RW_SECRET_KEYS``: the first encrypts, all decrypt); with none
configured, the first start generates one and keeps it in ``<data_dir>/secret-keys`` (mode
0600, one key per line) so that later starts can still read what earlier ones wrote.

To rotate: configure the new key first and the old one after it, ``rotate`` every stored token,
then drop the old key. API responses never show a secret: they show ``mask(value)``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from workers.config import ConfigError, Settings

KEYS_FILE = "secret-keys"
MASK = "******"
# "Name: value" (an HTTP header): the name is not secret and tells the reader what is hidden.
_HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]")


class SecretError(Exception):
    """A stored secret cannot be decrypted with any configured key (wrong key, or tampered)."""


class SecretBox:
    """Encrypts and decrypts secrets with Fernet keys: the first encrypts, every one decrypts.

    Non-blocking. ``__init__`` raises ``ValueError`` for no keys or a malformed key.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("secret keys: at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        """A token for ``plaintext``, encrypted and authenticated with the primary key."""
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of ``token``. Raises ``SecretError`` when no key opens it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError):
            raise SecretError("cannot decrypt a stored secret with any configured key") from None

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the primary key. Raises ``SecretError`` like ``decrypt``."""
        try:
            return self._fernet.rotate(token.encode()).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretError("cannot decrypt a stored secret with any configured key") from None

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key (url-safe base64 of 32 bytes)."""
        return Fernet.generate_key().decode("ascii")


def secret_box(settings: Settings) -> SecretBox:
    """The box for this process, called once at start-up; may block briefly on the data dir.

    Configured keys win. Otherwise the key file under ``data_dir`` is read, or created with a
    new key on the first start. Raises ``ConfigError`` when the file cannot be read or written
    or holds something other than Fernet keys.
    """
    if settings.secrets.keys:
        return SecretBox(settings.secrets.keys)
    path = settings.data_dir / KEYS_FILE
    keys = _load_keys(path)
    if not keys:
        keys = _create_keys(path, SecretBox.generate_key())
    return SecretBox(keys)


def mask(value: str | None) -> str | None:
    """What an API response shows instead of a secret: ``None`` stays ``None``.

    ``"Authorization: Bearer abc"`` becomes ``"Authorization: ******"``; anything else ``"******"``.
    """
    if value is None:
        return None
    header = _HEADER.match(value)
    return f"{header.group(1)}: {MASK}" if header else MASK


def _load_keys(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: RW_DATA_DIR: cannot read {path}: {exc}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(
                f"invalid configuration: RW_DATA_DIR: {path} holds a line that is not a Fernet key"
            ) from None
    return keys


def _create_keys(path: Path, key: str) -> list[str]:
    """Write the key file atomically; when another process won the race, use its key."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{KEYS_FILE}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(key + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)  # fails if the file exists: never replaces a key in use
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise ConfigError(f"invalid configuration: RW_DATA_DIR: cannot write {path}: {exc}") from None
    keys = _load_keys(path)
    if not keys:
        raise ConfigError(f"invalid configuration: RW_DATA_DIR: {path} holds no key")
    return keys
