"""Service processes as an operator runs them: ``registry-workers api|worker|scheduler`` as OS processes.

Used by the fault-injection suite to SIGKILL, scale and restart workers while load flows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests  # type: ignore[import-untyped]

from tests.support.services import free_port

CLI = [sys.executable, "-m", "workers"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``RW_`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 30.0) -> requests.Response:
    """Polls ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.1)


@dataclass
class ServiceProcess:
    role: str
    process: subprocess.Popen[bytes]
    listen: str

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Fleet:
    """Starts role processes sharing ``env``; every process it started is ended on :meth:`close`."""

    env: dict[str, str]
    log: Path
    processes: list[ServiceProcess] = field(default_factory=list)
    kills: int = 0
    clean_exits: int = 0

    def start(self, role: str, *args: str) -> ServiceProcess:
        listen = f"127.0.0.1:{free_port()}"
        env = {**self.env, "RW_LISTEN": listen}
        with self.log.open("a") as handle:
            process = subprocess.Popen([*CLI, role, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)
        started = ServiceProcess(role, process, listen)
        self.processes.append(started)
        return started

    def running(self, role: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.role == role and p.alive]

    def kill(self, victim: ServiceProcess) -> None:
        """SIGKILL: no drain, no commit, leases left behind."""
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        self.kills += 1

    def terminate(self, victim: ServiceProcess, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the graceful shutdown an orchestrator asks for when scaling down."""
        victim.process.send_signal(signal.SIGTERM)
        code = victim.process.wait(timeout=timeout_s)
        if code == 0:
            self.clean_exits += 1
        return code

    def close(self) -> None:
        for started in self.processes:
            if started.alive:
                started.process.send_signal(signal.SIGKILL)
                started.process.wait(timeout=10)

    def log_tail(self, limit: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-limit:] if self.log.exists() else ""
