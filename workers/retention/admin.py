"""Operator commands for retention: ``registry-workers retention backfill`` and ``retention restore``.

Both talk to the database and the local region's registry directly (no running service needed)
and return the process exit status: 0 done, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from workers.config import Settings
from workers.db.engine import create_engine, session_factory
from workers.events import grammar
from workers.replication.clients import RegionClients
from workers.replication.errors import RegistryError
from workers.replication.store import CheckpointStore
from workers.retention.backfill import backfill
from workers.retention.restore import restore


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``retention backfill [NAMESPACE[/REPO]]`` and ``retention restore REFERENCE``."""
    retention = sub.add_parser("retention", parents=[common], help="backfill the inventory, restore a deletion")
    commands = retention.add_subparsers(dest="retention_command", required=True, metavar="COMMAND")
    backfill_parser = commands.add_parser(
        "backfill", parents=[common], help="record images the registry has but the inventory lacks"
    )
    backfill_parser.add_argument("scope", nargs="?", metavar="NAMESPACE[/REPO]")
    restore_parser = commands.add_parser("restore", parents=[common], help="re-push a manifest retention deleted")
    restore_parser.add_argument("reference", metavar="NAMESPACE/REPO:TAG|NAMESPACE/REPO@DIGEST")


def run_admin_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run a parsed ``retention`` command; returns the exit status."""
    try:
        if args.retention_command == "backfill":
            return asyncio.run(run_backfill(settings, args.scope))
        return asyncio.run(run_restore(settings, args.reference))
    except ValueError as exc:
        print(f"registry-workers: {exc}", file=sys.stderr)
        return 2


def parse_scope(text: str | None) -> tuple[str | None, str | None]:
    """``NAMESPACE[/REPO]`` → (namespace, repository); ``ValueError`` naming the problem."""
    if not text:
        return None, None
    namespace, _, repository = text.partition("/")
    if not namespace or not grammar.is_repository_name(text):
        raise ValueError(f"{text!r}: expected NAMESPACE or NAMESPACE/REPOSITORY")
    return namespace, repository or None


def parse_restore_reference(text: str) -> tuple[str, str, str]:
    """``NS/REPO:TAG`` or ``NS/REPO@DIGEST`` → (namespace, repository, tag or digest)."""
    if "@" in text:
        name, _, reference = text.partition("@")
        valid = grammar.is_digest(reference)
    else:
        name, _, reference = text.rpartition(":")
        valid = grammar.is_tag(reference) and "/" not in reference
    if not valid or "/" not in name or not grammar.is_repository_name(name):
        raise ValueError(f"{text!r}: expected NAMESPACE/REPOSITORY:TAG or NAMESPACE/REPOSITORY@DIGEST")
    namespace, repository = grammar.split_repository(name)
    return namespace, repository, reference


async def run_backfill(settings: Settings, scope: str | None, out: TextIO | None = None) -> int:
    """Backfill the inventory of ``scope`` (everything when None) and print the report."""
    out = out or sys.stdout
    namespace, repository = parse_scope(scope)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    clients = RegionClients(settings, sessions, CheckpointStore(sessions, _now))
    try:
        report = await backfill(sessions, clients.client(settings.region), settings.region, _now, namespace, repository)
        print(report.describe(), file=out)
        return 1 if report.errors else 0
    finally:
        await clients.close()
        await engine.dispose()


async def run_restore(settings: Settings, reference: str, out: TextIO | None = None) -> int:
    """Re-push the newest retention deletion of ``reference`` under its tags."""
    out = out or sys.stdout
    namespace, repository, ref = parse_restore_reference(reference)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    clients = RegionClients(settings, sessions, CheckpointStore(sessions, _now))
    try:
        entry = await restore(sessions, clients, _now, namespace, repository, ref)
    except LookupError as exc:
        print(f"registry-workers: {exc}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"registry-workers: the registry refused the restore: {exc}", file=sys.stderr)
        return 1
    finally:
        await clients.close()
        await engine.dispose()
    tags = ", ".join(entry.tags) or "(untagged)"
    print(f"restored {namespace}/{repository}@{entry.digest} as {tags}", file=out)
    return 0


def _now() -> datetime:
    return datetime.now(UTC)
