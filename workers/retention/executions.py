"""A retention run as SWR enterprise executions show it: tasks per repository, sub-tasks per tag.

Pure, no I/O: derived from the run's stored plan (every digest with its verdict and reasons),
its status, and which digests its deletion log records. Called by the executions API.

- Execution status: ``pending``/``running`` → ``InProgress``, ``succeeded`` → ``Succeed``,
  ``failed`` → ``Failed``, ``aborted`` (a blast-radius cap stopped it before any deletion) →
  ``Stopped``.
- Tasks: one per repository of the plan, numbered 1… in repository order; ``total`` digests,
  ``retained`` the digests left in place (for a dry run: those the rules would keep).
- Sub-tasks: one per tag of each digest (``""`` for an untagged digest), numbered 1… within the
  task; ``action`` ``retain`` or ``delete``; in a failed run a deletion the log does not record
  is ``Failed``. ``status_text`` carries the plan's reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXECUTION_STATUS = {
    "pending": "InProgress",
    "running": "InProgress",
    "succeeded": "Succeed",
    "failed": "Failed",
    "aborted": "Stopped",
}
TRIGGERS = {"manual": "MANUAL", "schedule": "SCHEDULE", "saved": "SAVED"}
IN_PROGRESS_CODE, FINAL_CODE = 2, 3  # Harbor's job status codes: running, final


@dataclass(frozen=True, slots=True)
class SubtaskView:
    id: int
    repository: str
    tag: str
    digest: str
    action: str  # retain | delete
    status: str
    status_text: str


@dataclass(frozen=True, slots=True)
class TaskView:
    id: int
    repository: str
    status: str
    total: int
    retained: int
    subtasks: tuple[SubtaskView, ...]

    @property
    def status_code(self) -> int:
        return IN_PROGRESS_CODE if self.status == "InProgress" else FINAL_CODE


def execution_status(run_status: str) -> str:
    return EXECUTION_STATUS.get(run_status, "Failed")


def execution_tasks(
    run_status: str, dry_run: bool, plan: Sequence[Mapping[str, Any]], deleted: Iterable[tuple[str, str]]
) -> list[TaskView]:
    """Every task of a run, in repository order, with its sub-tasks."""
    done = set(deleted)
    by_repository: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for decision in plan:
        by_repository[str(decision["repository"])].append(decision)
    status = execution_status(run_status)
    tasks = []
    for number, repository in enumerate(sorted(by_repository), start=1):
        decisions = sorted(by_repository[repository], key=lambda d: str(d["digest"]))
        subtasks: list[SubtaskView] = []
        removed = 0
        for decision in decisions:
            verdict = _verdict(status, dry_run, decision, (repository, str(decision["digest"])) in done)
            removed += verdict[0] == "delete" and verdict[1] == "Succeed"
            for tag in _tags(decision):
                subtasks.append(SubtaskView(len(subtasks) + 1, repository, tag, str(decision["digest"]), *verdict))
        task_status = status
        if status == "Failed":
            task_status = "Failed" if any(s.status == "Failed" for s in subtasks) else "Succeed"
        retained = len(decisions) - removed
        tasks.append(TaskView(number, repository, task_status, len(decisions), retained, tuple(subtasks)))
    return tasks


def _verdict(status: str, dry_run: bool, decision: Mapping[str, Any], logged: bool) -> tuple[str, str, str]:
    """(action, sub-task status, status text) of one digest."""
    action = "delete" if decision.get("action") == "delete" else "retain"
    reasons = "; ".join(str(reason) for reason in decision.get("reasons") or [])
    if status in ("InProgress", "Stopped"):
        return action, status, reasons
    if dry_run:
        return action, "Succeed", f"dry run: {reasons}" if action == "delete" else reasons
    if action == "delete" and status == "Failed" and not logged:
        return action, "Failed", f"not deleted: {reasons}"
    return action, "Succeed", reasons


def _tags(decision: Mapping[str, Any]) -> list[str]:
    tags = [str(tag) for tag in decision.get("tags") or []]
    return [*tags, ""] if decision.get("untagged") or not tags else tags
