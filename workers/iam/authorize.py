"""The one decision the API shell asks for: IAM policies and SWR grants together.

Pure, no I/O, never raises (but ``authorize_route`` raises ``UnknownRoute`` for a route that
has no entry). Called once per API request, after authentication.

The rule, for each access request (the route's own action, then each dependent action):

1. an explicit Deny in any policy denies — no grant and no Allow can override it;
2. otherwise an Allow in any policy allows;
3. otherwise a grant that covers the action and resource allows (``workers.iam.grants``);
4. otherwise the request is denied (implicit deny).

The route is allowed only if every one of its requests is; the decision reported is the first
refused request's (so a 403 names the dependent action that failed), or the route's own allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from workers.iam.actions import route_action
from workers.iam.grants import Grant, covering_grant
from workers.iam.policy import AccessRequest, Decision, Outcome, Policy, evaluate, first_refusal
from workers.iam.urn import Scope


def decide(request: AccessRequest, policies: Sequence[Policy], grants: Sequence[Grant] = ()) -> Decision:
    """One request: policies first (an explicit Deny is final), grants only if no policy spoke."""
    decision = evaluate(request, policies)
    if decision.outcome is not Outcome.IMPLICIT_DENY:
        return decision
    grant = covering_grant(grants, request.action, request.resource)
    return decision if grant is None else Decision(Outcome.ALLOW, request, grant=grant)


def authorize(requests: Sequence[AccessRequest], policies: Sequence[Policy], grants: Sequence[Grant] = ()) -> Decision:
    """All of ``requests`` (own action first, then dependencies) under the rule above."""
    return first_refusal(requests, lambda request: decide(request, policies, grants))


def authorize_route(
    method: str,
    template: str,
    scope: Scope,
    params: Mapping[str, str],
    context: Mapping[str, str],
    policies: Sequence[Policy],
    grants: Sequence[Grant] = (),
) -> Decision:
    """Look the route up in ``ROUTE_ACTIONS`` and authorize all it needs; raises ``UnknownRoute``."""
    return authorize(route_action(method, template).requests(scope, params, context), policies, grants)
