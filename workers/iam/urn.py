"""Resource URNs of SWR and the ``*``/``?`` wildcards that policies match them with.

Pure, no I/O. URNs follow Huawei IAM (``<service>:<region>:<account-id>:<type>:<path>``):

=====================  ==========================================================================
basic ``repo``         ``swr:<region>:<account-id>:repo:<namespace>/<repo>`` (repo may hold ``/``)
basic ``namespace``    ``swr:<region>:<account-id>:namespace:<namespace>``
enterprise instance    ``swr:<region>:<account-id>:instance:<instance-id>``
enterprise repository  ``swr:<region>:<account-id>:repository:<instance-id>/<namespace>/<repo>``
=====================  ==========================================================================

Huawei names an enterprise instance by its name in URNs; we serve one instance, identified by its
id in every path, so URNs carry the id. Operations on a whole enterprise namespace (its webhook,
retention and immutable-tag policies) name ``repository:<instance-id>/<namespace>``; a policy
that should cover a namespace and every repository in it lists both ``.../<namespace>`` and
``.../<namespace>/*``, as Alibaba's RAM does for ``repository/<namespace>`` (see the seeds).
A list over a whole account or instance names the literal ``*`` in place of the name
(``...:repo:*``, ``...:repository:<instance-id>/*``): only a pattern that covers every name
matches it. Actions that act on no resource (``swr::createLoginSecret``) name :data:`ANY`.

Wildcards: ``*`` matches any run of characters (``/`` and ``:`` included), ``?`` exactly one;
nothing else is special. Resources match case-sensitively, actions case-insensitively (both
sides lower-cased; the action grammar is ASCII). Each pattern becomes a matcher once (cached):
``==``, ``startswith`` or ``endswith`` for the usual shapes, else a Python regex in which every
``*`` but the last is an atomic, lazy group. A glob needs no backtracking into an earlier ``*``
(taking the leftmost place for each literal run is always right), so matching is linear in
pattern times value length even for ``*a*a*a*b`` against a long value, where a plain
``fnmatch`` translation is exponential.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

SERVICE = "swr"
ANY = "*"
REPO = "repo"
NAMESPACE = "namespace"
INSTANCE = "instance"
REPOSITORY = "repository"  # enterprise edition
_CACHE_SIZE = 4096
Matcher = Callable[[str], bool]


@dataclass(frozen=True)
class Scope:
    """Where a request is served: the region id and the account (domain) id that own the resources."""

    region: str
    account_id: str


@dataclass(frozen=True)
class Urn:
    """A parsed resource URN; ``path`` is everything after the resource type."""

    service: str
    region: str
    account_id: str
    resource_type: str
    path: str


def repo_urn(scope: Scope, namespace: str, repository: str) -> str:
    """A basic-edition repository; ``$`` in an API path stands for ``/`` in the repository name."""
    return f"{SERVICE}:{scope.region}:{scope.account_id}:{REPO}:{namespace}/{repository.replace('$', '/')}"


def namespace_urn(scope: Scope, namespace: str) -> str:
    """A basic-edition namespace (SWR's "organization")."""
    return f"{SERVICE}:{scope.region}:{scope.account_id}:{NAMESPACE}:{namespace}"


def instance_urn(scope: Scope, instance_id: str) -> str:
    """An enterprise-edition instance."""
    return f"{SERVICE}:{scope.region}:{scope.account_id}:{INSTANCE}:{instance_id}"


def enterprise_repository_urn(scope: Scope, instance_id: str, namespace: str, repository: str | None = None) -> str:
    """An enterprise repository, or with ``repository=None`` the namespace itself."""
    path = f"{instance_id}/{namespace}" if repository is None else f"{instance_id}/{namespace}/{repository}"
    return f"{SERVICE}:{scope.region}:{scope.account_id}:{REPOSITORY}:{path}"


def parse_urn(urn: str) -> Urn | None:
    """The parts of ``urn``, or ``None`` for :data:`ANY` and anything that is not a URN."""
    parts = urn.split(":", 4)
    if len(parts) != 5 or not parts[0] or not parts[3]:
        return None
    service, region, account_id, resource_type, path = parts
    return Urn(service.lower(), region, account_id, resource_type, path)


def glob_to_regex(pattern: str) -> str:
    """The regex body (no anchors, no flags) that matches what the glob ``pattern`` matches."""
    pieces = pattern.split("*")
    literal = [_literal(piece) for piece in pieces]
    if len(pieces) == 1:
        return literal[0]
    middle = "".join(f"(?>.*?{piece})" for piece in literal[1:-1])
    return f"{literal[0]}{middle}.*{literal[-1]}"


def _literal(piece: str) -> str:
    return ".".join(re.escape(part) for part in piece.split("?"))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def glob_matcher(pattern: str) -> Matcher:
    """A case-sensitive test for one glob, cached per pattern.

    The usual shapes skip regexes: ``*`` is always true, a literal is ``==``, ``abc*`` is
    ``startswith`` and ``*abc`` ``endswith``. (Compiling a regex costs a Python ``re`` several
    hundred microseconds, and a policy has hundreds of patterns, most of them repeated.)
    """
    wild = pattern.count("*") + pattern.count("?")
    if pattern == "*":
        return _always
    if not wild:
        return pattern.__eq__
    if wild == 1 and pattern.endswith("*"):
        return operator.methodcaller("startswith", pattern[:-1])
    if wild == 1 and pattern.startswith("*"):
        return operator.methodcaller("endswith", pattern[1:])
    regex = re.compile(f"(?:{glob_to_regex(pattern)})\\Z", re.DOTALL)
    return lambda value: regex.match(value) is not None


def _always(value: str) -> bool:
    return True


def matches_any(patterns: Iterable[str], value: str, *, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches one of the wildcard ``patterns`` (``*`` alone matches everything)."""
    if ignore_case:
        return any(glob_matcher(p.lower())(value.lower()) for p in patterns)
    return any(glob_matcher(p)(value) for p in patterns)


def resource_matches(pattern: str, resource: str) -> bool:
    """Case-sensitive match of a policy's resource pattern (the service prefix aside: ``SWR:`` = ``swr:``)."""
    return glob_matcher(normalise_resource_pattern(pattern))(resource)


def action_matches(pattern: str, action: str) -> bool:
    """Case-insensitive match of a policy's action pattern (``swr:repo:*``) against an action."""
    return glob_matcher(pattern.lower())(action.lower())


def normalise_resource_pattern(pattern: str) -> str:
    """Lower-case the service part: Huawei's console writes ``SWR:*:*:repository:...`` for ``swr:``."""
    service, colon, rest = pattern.partition(":")
    return f"{service.lower()}{colon}{rest}"
