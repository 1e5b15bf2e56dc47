"""Operator commands: ``registry-workers iam ...`` and ``registry-workers audit list``.

::

    registry-workers iam user create NAME                       # a user (no key yet)
    registry-workers iam key create USER                        # {"access_key", "secret_key"}: shown once
    registry-workers iam key disable|enable|delete ACCESS_KEY
    registry-workers iam policy create NAME --file POLICY.json  # validated like the API does
    registry-workers iam policy attach USER POLICY_NAME [--group]  # custom or system policy
    registry-workers iam grant USER NAMESPACE[/REPO] read|edit|manage
    registry-workers audit list [--principal P] [--action A] [--since T] [--limit N]

Each opens the configured database (same ``--config``/environment as the service), does its
work in one transaction and prints readable text, or JSON with ``--json``. Migrating is not
their job: without the IAM tables they stop with a message saying to run ``migrate``. A
running API sees changes made here within ``workers.iam.access.DEFAULT_TTL_S`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncSession

from workers.config import Settings
from workers.db.engine import create_engine, session_factory
from workers.events import grammar
from workers.iam import audit, grant_store, policy_store, principals
from workers.iam.principals import GROUP, USER, IamError
from workers.secrets import secret_box

REQUIRED_TABLES = ("iam_users", "iam_access_keys", "iam_policies", "iam_attachments", "iam_grants", "audit_events")
Work = Callable[[AsyncSession], Awaitable[dict[str, Any]]]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``iam`` and ``audit`` to the CLI's role subparsers."""
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON")
    parents = [common, output]
    iam = sub.add_parser("iam", parents=[common], help="users, access keys, policies and grants")
    nouns = iam.add_subparsers(dest="iam_noun", required=True, metavar="NOUN")
    user = nouns.add_parser("user", parents=[common], help="users").add_subparsers(dest="verb", required=True)
    user.add_parser("create", parents=parents, help="create a user").add_argument("name", metavar="NAME")
    user.add_parser("list", parents=parents, help="list users")
    key = nouns.add_parser("key", parents=[common], help="access keys").add_subparsers(dest="verb", required=True)
    key.add_parser("create", parents=parents, help="create a key; prints the secret once").add_argument("user")
    for verb in ("disable", "enable", "delete"):
        key.add_parser(verb, parents=parents, help=f"{verb} an access key").add_argument("access_key")
    policy = nouns.add_parser("policy", parents=[common], help="policies").add_subparsers(dest="verb", required=True)
    create = policy.add_parser("create", parents=parents, help="create a policy from a JSON document")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--file", required=True, metavar="POLICY.json")
    create.add_argument("--description", default="")
    attach = policy.add_parser("attach", parents=parents, help="attach a policy (system ones too) to a user")
    attach.add_argument("principal", metavar="USER")
    attach.add_argument("policy", metavar="POLICY_NAME")
    attach.add_argument("--group", action="store_true", help="USER names a group")
    grant = nouns.add_parser("grant", parents=parents, help="grant a user read, edit or manage on a namespace/repo")
    grant.add_argument("user", metavar="USER")
    grant.add_argument("target", metavar="NAMESPACE[/REPO]")
    grant.add_argument("level", choices=tuple(grant_store.LEVELS))
    audit_parser = sub.add_parser("audit", parents=[common], help="the audit trail")
    audit_verbs = audit_parser.add_subparsers(dest="verb", required=True)
    listing = audit_verbs.add_parser("list", parents=parents, help="recent audit records, newest first")
    listing.add_argument("--principal", help="user name, user id or access key")
    listing.add_argument("--action", help="an action; * matches any run of characters")
    listing.add_argument("--since", help="ISO 8601 time or an age such as 30m, 2h, 7d")
    listing.add_argument("--limit", type=int, default=50)


def run_admin_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the parsed ``iam``/``audit`` command; prints its outcome and returns the exit status."""
    try:
        result, text = asyncio.run(_dispatch(args, settings))
    except (IamError, AdminError) as exc:
        print(f"registry-workers: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else text)
    return 0


class AdminError(Exception):
    """The command cannot run (no IAM tables, unreadable policy file, bad argument)."""


async def _dispatch(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    now = datetime.now(UTC)
    if args.role == "audit":
        since = _since(args.since, now)
        events = await _run(settings, lambda s: _audit(s, args, since))
        return events["events"], "\n".join(_audit_line(e) for e in events["events"]) or "(no audit records)"
    command = f"{args.iam_noun} {getattr(args, 'verb', '')}".strip()
    if command == "user create":
        user = await _run(settings, lambda s: _created_user(s, args.name, now))
        return user, f"created user {user['name']} (id {user['id']})"
    if command == "user list":
        users = await _run(settings, _user_list)
        return users["users"], "\n".join(f"{u['name']}\t{u['id']}" for u in users["users"]) or "(no users)"
    if command == "key create":
        box = secret_box(settings)
        key = await _run(settings, lambda s: _created_key(s, box, args.user, now))
        shown = {"access_key": key["access_key"], "secret_key": key["secret_key"]}
        return (
            shown,
            f"access key: {key['access_key']}\nsecret key: {key['secret_key']}\n(the secret is shown only now)",
        )
    if command in ("key disable", "key enable", "key delete"):
        return await _run(settings, lambda s: _key_change(s, args.verb, args.access_key, now)), f"{args.verb}d key"
    if command == "policy create":
        document = _read_policy(args.file)
        policy = await _run(settings, lambda s: _created_policy(s, args.name, args.description, document, now))
        return policy, f"created policy {policy['name']} ({len(document.get('Statement', []))} statements)"
    if command == "policy attach":
        kind = GROUP if args.group else USER
        done = await _run(settings, lambda s: _attached(s, kind, args.principal, args.policy, now))
        return done, f"attached policy {args.policy!r} to {kind} {done[kind]}"
    if command == "grant":
        namespace, repository = _grant_target(args.target)
        level = grant_store.auth_level(args.level, "level")
        entry = grant_store.UserAuth("USER", args.user, args.user, level)  # an id or a name
        done = await _run(settings, lambda s: _granted(s, entry, namespace, repository, now))
        return done, f"granted {args.level} on {args.target} to user {done['user_name']}"
    raise AdminError(f"unknown command {command!r}")


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            missing = await connection.run_sync(_missing_tables)
        if missing:
            raise AdminError(
                f"the database has no IAM tables ({', '.join(missing)}); run `registry-workers migrate` first"
            )
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _missing_tables(connection: Connection) -> list[str]:
    inspector = inspect(connection)
    return [table for table in REQUIRED_TABLES if not inspector.has_table(table)]


async def _run(settings: Settings, work: Work) -> dict[str, Any]:
    async with _database(settings) as sessions, sessions.begin() as session:
        return await work(session)


async def _created_user(session: AsyncSession, name: str, now: datetime) -> dict[str, Any]:
    user = await principals.create_user(session, name, "", now)
    await session.flush()
    return await principals.user_document(session, user)


async def _user_list(session: AsyncSession) -> dict[str, Any]:
    users = await principals.list_users(session)
    return {"users": [await principals.user_document(session, u, details=False) for u in users]}


async def _created_key(session: AsyncSession, box: Any, user: str, now: datetime) -> dict[str, Any]:
    key, owner, secret = await principals.create_access_key(session, box, user, now)
    return principals.key_document(key, owner, secret)


async def _key_change(session: AsyncSession, verb: str, access_key: str, now: datetime) -> dict[str, Any]:
    if verb == "delete":
        key = await principals.delete_access_key(session, access_key)
    else:
        key = await principals.set_access_key_enabled(session, access_key, verb == "enable", now)
    return {"access_key": key.access_key, "enabled": key.enabled and verb != "delete", "deleted": verb == "delete"}


async def _created_policy(
    session: AsyncSession, name: str, description: str, document: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return policy_store.policy_document(await policy_store.create_policy(session, name, description, document, now))


async def _attached(session: AsyncSession, kind: str, ref: str, policy: str, now: datetime) -> dict[str, Any]:
    return {kind: await policy_store.attach(session, kind, ref, policy, now), "policy": policy}


async def _granted(
    session: AsyncSession, entry: grant_store.UserAuth, namespace: str, repository: str, now: datetime
) -> dict[str, Any]:
    await grant_store.put_grants(session, namespace, repository, [entry], "cli", now)
    user = await principals.find_user(session, entry.user_name)
    [granted] = [
        g for g in await grant_store.list_grants(session, user.id, namespace) if g["repository"] == (repository or None)
    ]
    return granted


async def _audit(session: AsyncSession, args: argparse.Namespace, since: datetime | None) -> dict[str, Any]:
    limit = max(1, min(args.limit, audit.MAX_LIMIT))
    events = await audit.list_audit(session, principal=args.principal, action=args.action, since=since, limit=limit)
    return {"events": events}


def _audit_line(event: dict[str, Any]) -> str:
    who = event["principal"] or f"({event['access_key'] or 'anonymous'})"
    status = "" if event["status"] is None else str(event["status"])
    what = event["route"] or event["action"]
    return "\t".join(
        [
            event["time"],
            who,
            event["action"] or "-",
            event["resource"] or "-",
            status,
            event["decision"],
            what,
            event["detail"][:160],
        ]
    )


def _since(raw: str | None, now: datetime) -> datetime | None:
    if not raw:
        return None
    try:
        return audit.parse_since(raw, now)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _read_policy(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdminError(f"--file: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AdminError(f"--file: {path} is not valid JSON: {exc}") from None
    return policy_store.validate_document(document)


def _grant_target(target: str) -> tuple[str, str]:
    namespace, _, repository = target.partition("/")
    if not grammar.is_repository_name(f"{namespace}/{repository or 'x'}"):
        raise AdminError(f"NAMESPACE[/REPO]: {target!r} is not a valid namespace or repository name")
    return namespace, repository
