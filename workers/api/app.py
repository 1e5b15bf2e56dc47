"""The HTTP applications: the full one (ingress + SWR API + ops) and the ops-only one."""

from __future__ import annotations

from aiohttp import web

from workers.api import (
    access,
    iam_policies,
    iam_users,
    immutable_rules,
    ops,
    replication_policies,
    repos,
    retention_backfill,
    retention_executions,
    retention_policies,
    retentions,
    sync,
    triggers,
    webhooks,
)
from workers.api.audit_trail import add_request_id, audit_middleware
from workers.api.authn import KeyRecord, Principal, StaticKeyResolver, aksk_middleware
from workers.api.authz import ACCESS, DatabaseKeyResolver, authorization_middleware
from workers.api.context import CONTEXT, ApiContext
from workers.api.errors import error_middleware
from workers.db.engine import ping
from workers.iam.access import AccessCache
from workers.iam.urn import Scope
from workers.ingress import routes as ingress

ADMIN = Principal(user_id="admin", user_name="admin", access_key="")


def admin_resolver(ctx: ApiContext) -> StaticKeyResolver:
    """The bootstrap admin key from RW_ADMIN_ACCESS_KEY/RW_ADMIN_SECRET_KEY."""
    ak, sk = ctx.settings.admin_access_key, ctx.settings.admin_secret_key
    if not ak or not sk:
        return StaticKeyResolver()
    principal = Principal(user_id=ADMIN.user_id, user_name=ADMIN.user_name, access_key=ak)
    return StaticKeyResolver.of(KeyRecord(access_key=ak, secret_key=sk, principal=principal))


def build_api_app(ctx: ApiContext) -> web.Application:
    """Ingress, SWR-compatible API and operational endpoints on one listener.

    Middlewares, outermost first: request id and audit record, JSON errors, AK/SK
    authentication (the admin key, then database keys), authorization (``workers.api.authz``).
    """
    access_cache = AccessCache(ctx.sessions, Scope(ctx.settings.region, ctx.settings.project_id))
    keys = DatabaseKeyResolver(ctx.sessions, ctx.secret_box, admin_resolver(ctx))
    # The ingress enforces its own, configurable limit while streaming; this is a backstop.
    app = web.Application(
        middlewares=[
            audit_middleware(ctx),
            error_middleware,
            aksk_middleware(keys),
            authorization_middleware(ctx, access_cache),
        ],
        client_max_size=max(ctx.settings.ingress_max_body * 2, 4 * 1024 * 1024),
    )
    app[CONTEXT] = ctx
    app[ACCESS] = access_cache
    app.on_response_prepare.append(add_request_id)
    app.add_routes(ingress.routes)
    app.add_routes(repos.routes)
    app.add_routes(triggers.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(sync.routes)
    app.add_routes(replication_policies.routes)
    app.add_routes(retentions.routes)
    app.add_routes(retention_backfill.routes)
    app.add_routes(retention_policies.routes)
    app.add_routes(retention_executions.routes)
    app.add_routes(immutable_rules.routes)
    app.add_routes(access.routes)
    app.add_routes(iam_users.routes)
    app.add_routes(iam_policies.routes)
    ops.add_ops_routes(app, readiness_checks(ctx))
    return app


def readiness_checks(ctx: ApiContext) -> dict[str, ops.Check]:
    async def database() -> None:
        await ping(ctx.engine)

    return {"database": database, "broker": ctx.producer.ping}


def build_ops_app(checks: dict[str, ops.Check]) -> web.Application:
    """Health, readiness and metrics only: the listener of worker and scheduler processes."""
    app = web.Application(middlewares=[error_middleware])
    ops.add_ops_routes(app, checks)
    return app
