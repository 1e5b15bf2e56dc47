"""IAM: who may call which SWR API on which resource. A pure decision core, and a thin shell.

::

    route (method, template) ──► actions.route_action ──► AccessRequests (own action + dependencies)
                                                                │
    policy documents ──► policy.parse_policy ──► Policy ────────┤
    SWR grants (auth 1/3/7) ──► grants.Grant ───────────────────┼──► authorize.authorize ──► Decision
    system.SYSTEM_POLICIES (SWR FullAccess, ...) ───────────────┘

``urn`` builds and matches resource URNs, ``conditions`` evaluates ``Condition`` blocks,
``catalogue`` lists the actions, ``grammar`` is the lexical grammar shared with
``schemas/iam-policy.v1.schema.json``. Rule: an explicit Deny wins; else a policy Allow or a
covering grant allows; else deny.

The shell (database I/O): ``principals`` (users, groups, access keys), ``policy_store``
(custom policies, attachments), ``grant_store`` (SWR grants), ``access`` (a user's policies and
grants, cached briefly, for the API's ``workers.api.authz`` middleware), ``audit`` (the audit
trail) and ``admin`` (the ``registry-workers iam``/``audit`` commands).
"""
