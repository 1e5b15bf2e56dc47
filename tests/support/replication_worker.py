"""A replication worker in its own process, to be SIGKILLed mid-copy (the approach of
``tests/test_replication_resume.py``, as helpers other scenarios can share).

::

    config = write_worker_config(settings, tmp_path / "worker.yaml", data_dir=tmp_path / "data")
    await kill_after_checkpoint(config, tmp_path / "worker.log", sessions, offset=2 * CHUNK)
    # the job stays leased until ``replication.lease_s`` runs out; then any worker resumes it
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.services import free_port
from workers.config import Settings
from workers.db.models import UploadCheckpoint


def write_worker_config(settings: Settings, path: Path, **changes: Any) -> Path:
    """``settings`` as a YAML config for a worker process, on its own ops port, with ``changes``."""
    document = settings.model_dump(mode="json")
    document["listen"] = f"127.0.0.1:{free_port()}"
    document.update({key: str(value) if isinstance(value, Path) else value for key, value in changes.items()})
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def start_worker(config: Path, log: Path, kinds: str = "replication") -> subprocess.Popen[bytes]:
    """``python -m workers worker --kinds KINDS`` with only ``config`` (no RW_* from this process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    with log.open("a") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(config), "worker", "--kinds", kinds],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


async def checkpoint_at(sessions: async_sessionmaker[AsyncSession], offset: int) -> bool:
    """Whether some upload checkpoint has reached ``offset`` bytes."""
    async with sessions() as session:
        offsets = (await session.scalars(select(UploadCheckpoint.offset))).all()
    return any(o >= offset for o in offsets)


async def kill_after_checkpoint(
    config: Path, log: Path, sessions: async_sessionmaker[AsyncSession], offset: int, limit_s: float = 60.0
) -> None:
    """Start a worker, SIGKILL it once a checkpoint reaches ``offset``; raises if it never does."""
    worker = start_worker(config, log)
    try:
        deadline = time.monotonic() + limit_s
        while not await checkpoint_at(sessions, offset):
            if worker.poll() is not None:
                raise AssertionError(f"the worker exited ({worker.returncode}):\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no checkpoint reached {offset} bytes:\n{log_tail(log)}")
            await asyncio.sleep(0.2)
    finally:
        worker.kill()  # SIGKILL: no cleanup, the job stays leased until its lease runs out
        worker.wait(timeout=10)


def log_tail(log: Path, limit: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-limit:]
