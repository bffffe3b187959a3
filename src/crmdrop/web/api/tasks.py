"""`/tasks`: the user's tasks (due groups in their time zone), one task, done or not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from crmdrop.store import tasks
from crmdrop.web.api.common import CallerDep, IdPath, Page, now, reading, writing

router = APIRouter(tags=["tasks"])


class Task(BaseModel):
    task: tasks.TaskItem
    group: str  # overdue, today, tomorrow, later, "no date", done (user's time zone)


class DonePatch(BaseModel):
    done: bool


@router.get("/tasks", summary="The user's tasks: open ones soonest first, then recent done")
def list_tasks(request: Request, caller: CallerDep) -> Page[Task]:
    with reading(request) as session:
        board = tasks.task_board(session, caller.user.id, now=now())
    items = [Task(task=t, group=g.value) for g, rows in board.groups.items() for t in rows]
    return Page[Task](items=items)


@router.get("/tasks/{task_id}", summary="One task")
def get_task(request: Request, caller: CallerDep, task_id: IdPath) -> tasks.TaskItem:
    with reading(request) as session:
        return tasks.get_task(session, caller.account_id, task_id)


@router.patch("/tasks/{task_id}", summary="Mark a task done (or open again)")
def set_done(
    request: Request, caller: CallerDep, task_id: IdPath, body: DonePatch
) -> tasks.TaskItem:
    with writing(request) as session:
        return tasks.set_task_done(session, caller.account_id, task_id, body.done)
