"""``IamError`` (from the IAM shell) as the API's ``ApiError``: invalid 400, not_found 404, conflict 409."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from workers.api.errors import ApiError
from workers.iam.principals import IamError

_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}


@contextlib.contextmanager
def iam_errors() -> Iterator[None]:
    """Re-raise an ``IamError`` inside the block as the matching ``ApiError`` (after any rollback)."""
    try:
        yield
    except IamError as exc:
        status = _STATUS.get(exc.kind, 400)
        raise ApiError(status, f"SWR.0{status}", exc.message) from None
