"""Real services for tests: a throwaway Postgres cluster, the bundled Kafka broker, Distribution.

Plain synchronous helpers meant for pytest fixtures, e.g.::

    @pytest.fixture(scope="session")
    def postgres() -> Iterator[PostgresServer]:
        with PostgresServer() as pg:
            yield pg

Each helper owns one process and one temporary directory.  ``start()`` blocks until the service
answers (a few seconds at most) and raises :class:`ServiceStartError` with the log tail when it
does not; ``stop()`` signals only the helper's own process and is idempotent; ``cleanup()`` (run by
``__exit__``) stops and removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from workers.runtime.bundled_broker import BundledBroker

__all__ = [
    "DistributionRegistry",
    "KafkaBroker",
    "NotificationEndpoint",
    "PostgresServer",
    "ServiceStartError",
    "free_port",
]


class ServiceStartError(RuntimeError):
    """A service did not become ready; the message carries the tail of its log."""


_handed_out: set[int] = set()
LISTEN_PORTS_FROM = 20_000  # test listeners take ports from here up to the ephemeral range


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now and not handed out before by this process.

    Chosen below the kernel's ephemeral range: a port from that range (bind to 0) is also what
    outgoing connections get, so a client socket could take it before the server binds it (seen
    in CI). Below the range only listeners compete. Within this process two callers (a
    registry's HTTP and debug listeners, say) never get the same port.
    """
    low = _ephemeral_low()
    while True:
        port = LISTEN_PORTS_FROM + secrets.randbelow(low - LISTEN_PORTS_FROM) if low > LISTEN_PORTS_FROM + 1000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # unknown: let the kernel choose


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"


def _run(cmd: Sequence[str], *, what: str, log: Path | None = None, **kwargs: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = _log_tail(log) if log is not None else ""
        raise ServiceStartError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}{tail}")


class _Managed:
    """Context-manager plumbing shared by the helpers."""

    def start(self) -> object:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # a failed start must not leave its temp dir (or a half-started process)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


# --------------------------------------------------------------------------------------------- Postgres


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        raise ServiceStartError("no PostgreSQL server binaries under /usr/lib/postgresql (run .ci/install-system-deps)")
    newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
    return Path(newest).parent


class PostgresServer(_Managed):
    """A throwaway PostgreSQL cluster on 127.0.0.1 with ``trust`` auth and fsync off.

    As root the cluster belongs to the ``postgres`` user (the server refuses to run as root);
    otherwise it runs as the current user.  ``initdb`` + start takes about a second, so share one
    server per session and call :meth:`create_database` per test.
    """

    def __init__(self, port: int | None = None, *, bin_dir: Path | None = None, max_connections: int = 200):
        self._requested_port = port
        self.port = port or 0
        self._bin_dir = bin_dir
        self._max_connections = max_connections
        self._base: Path | None = None
        self._running = False

    @property
    def data_dir(self) -> Path:
        return self._require_base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_base()

    @property
    def log_path(self) -> Path:
        return self._require_base() / "server.log"

    def _require_base(self) -> Path:
        if self._base is None:
            raise RuntimeError("PostgresServer was never started")
        return self._base

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _initdb(self) -> None:
        bin_dir = self._bin_dir or postgres_bin_dir()
        self._bin_dir = bin_dir
        self._base = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._base, owner.pw_uid, owner.pw_gid)
        cmd = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
               "-E", "UTF8", "--no-locale", "--no-sync"]  # fmt: skip
        _run(self._as_owner(cmd), what="initdb", cwd=self._base)

    def start(self) -> str:
        """initdb on first use, then ``pg_ctl -w start``; returns :meth:`url` of ``postgres``."""
        if self._running:
            return self.url()
        if self._base is None:
            self._initdb()
        assert self._bin_dir is not None
        self.port = self._requested_port or self.port or free_port()
        opts = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self._max_connections}"
        )
        cmd = [str(self._bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
               "-w", "-t", "10", "-o", opts, "start"]  # fmt: skip
        _run(self._as_owner(cmd), what="pg_ctl start", log=self.log_path, cwd=self._base)
        self._running = True
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl -m MODE stop`` (``smart``, ``fast`` or ``immediate``); a no-op when stopped."""
        if not self._running or self._base is None:
            return
        assert self._bin_dir is not None
        cmd = [str(self._bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "10", "stop"]
        self._running = False
        _run(self._as_owner(cmd), what="pg_ctl stop", log=self.log_path, cwd=self._base)

    def restart(self, mode: str = "fast") -> None:
        """Stop and start on the same port with the same data."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """``createdb NAME``; returns the SQLAlchemy asyncpg URL of the new database."""
        assert self._bin_dir is not None
        cmd = [str(self._bin_dir / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port),
               "-U", "postgres", name]  # fmt: skip
        _run(cmd, what="createdb")
        return self.url(name)

    def url(self, db: str = "postgres") -> str:
        """SQLAlchemy URL: ``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str = "postgres") -> str:
        """libpq/asyncpg URL: ``postgresql://postgres@127.0.0.1:PORT/DB``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def cleanup(self) -> None:
        """Stop immediately (the data is thrown away) and remove the cluster directory."""
        with contextlib.suppress(ServiceStartError):
            self.stop("immediate")
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None


# --------------------------------------------------------------------------------------------- Kafka


class KafkaBroker(_Managed):
    """The bundled tansu broker for tests; keeps its port across :meth:`restart`.

    A restart loses all topics, offsets and groups (memory storage).
    """

    def __init__(self, port: int | None = None):
        self._dir = Path(tempfile.mkdtemp(prefix="kafka-test-"))
        self.port = port or free_port()
        self._broker = BundledBroker(port=self.port, log_path=self._dir / "tansu.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._broker.pid

    @property
    def log_path(self) -> Path:
        return self._dir / "tansu.log"

    def start(self) -> str:
        return self._broker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._broker.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, not a shutdown)."""
        self._broker.kill()

    def restart(self) -> str:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------- Distribution


@dataclass(frozen=True)
class NotificationEndpoint:
    """One ``notifications.endpoints[]`` entry of a Distribution config.

    ``timeout`` and ``backoff`` are Go durations.  ``threshold`` failures open the circuit
    breaker for ``backoff``; the registry retries a failed event forever (in memory).
    """

    url: str
    name: str = "test-listener"
    token: str | None = None
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    timeout: str = "1s"
    threshold: int = 3
    backoff: str = "100ms"
    ignored_media_types: Sequence[str] = ()
    ignored_actions: Sequence[str] = ()

    def to_config(self) -> dict[str, Any]:
        headers = {k: list(v) for k, v in self.headers.items()}
        if self.token is not None:
            headers["Authorization"] = [f"Bearer {self.token}"]
        entry: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "headers": headers,
            "timeout": self.timeout,
            "threshold": self.threshold,
            "backoff": self.backoff,
        }
        if self.ignored_media_types or self.ignored_actions:
            entry["ignore"] = {"mediatypes": list(self.ignored_media_types), "actions": list(self.ignored_actions)}
        return entry


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the only hash Distribution accepts) made by ``htpasswd -Bbn``."""
    if shutil.which("htpasswd") is None:
        raise ServiceStartError("htpasswd not found (Debian package apache2-utils; run .ci/install-system-deps)")
    out = subprocess.run(["htpasswd", "-Bbn", "-C", "4", user, password], capture_output=True, text=True, check=True)
    return out.stdout.strip()


class DistributionRegistry(_Managed):
    """A CNCF Distribution (``docker-registry``) instance on 127.0.0.1 with filesystem storage.

    ``auth=(user, password)`` turns on htpasswd basic auth.  ``notification_url`` (plus
    ``notification_token`` sent as ``Authorization: Bearer``) or ``endpoints`` configure webhook
    notifications.  Deletes are enabled.  Storage lives in a temp dir kept across
    :meth:`restart` and removed by :meth:`cleanup`.
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        notification_url: str | None = None,
        notification_token: str | None = None,
        endpoints: Sequence[NotificationEndpoint] = (),
        include_references: bool = False,
        port: int | None = None,
    ):
        self._auth = auth
        self._endpoints = list(endpoints)
        if notification_url is not None:
            self._endpoints.append(NotificationEndpoint(url=notification_url, token=notification_token))
        self._include_references = include_references
        self._dir = Path(tempfile.mkdtemp(prefix="registry-test-"))
        self.port = port or free_port()
        self.debug_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        return self._auth

    @property
    def storage_dir(self) -> Path:
        return self._dir / "storage"

    @property
    def config_path(self) -> Path:
        return self._dir / "config.yml"

    @property
    def log_path(self) -> Path:
        return self._dir / "registry.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def set_notification_endpoints(self, endpoints: Sequence[NotificationEndpoint]) -> None:
        """Replace the endpoints; takes effect at the next :meth:`start` / :meth:`restart`."""
        self._endpoints = list(endpoints)

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "debug": {"addr": f"127.0.0.1:{self.debug_port}"},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self._auth is not None:
            htpasswd = self._dir / "htpasswd"
            htpasswd.write_text(htpasswd_line(*self._auth) + "\n")
            config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
        if self._endpoints:
            config["notifications"] = {
                "events": {"includereferences": self._include_references},
                "endpoints": [e.to_config() for e in self._endpoints],
            }
        return config

    def start(self) -> str:
        """Write the config, run ``docker-registry serve`` and wait for ``/v2/``; returns :attr:`url`."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.config_path.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        # REGISTRY_* variables override the config file; never let the caller's leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self._dir,
            )  # fmt: skip
        try:
            self._wait_ready()
        except ServiceStartError:
            self.stop()
            raise
        return self.url

    def _wait_ready(self, timeout: float = 10.0) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceStartError(f"docker-registry exited ({self._proc.returncode})\n{_log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # auth on: the server is answering
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise ServiceStartError(f"docker-registry not ready within {timeout} s\n{_log_tail(self.log_path)}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (then SIGKILL after ``timeout``) this instance's process; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> str:
        self.stop()
        return self.start()

    def garbage_collect(self, *, delete_untagged: bool = False) -> str:
        """Run offline ``docker-registry garbage-collect``; call while stopped.  Returns its output."""
        cmd = ["docker-registry", "garbage-collect", str(self.config_path)]
        if delete_untagged:
            cmd.append("--delete-untagged")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return out.stdout + out.stderr

    def log_tail(self, limit: int = 4000) -> str:
        return _log_tail(self.log_path, limit)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
