"""py-inbox-triage: the inbox-triage example tool, written in Python.

It implements the same world as the Rust tool (examples/inbox-triage/wit):
it lists a mail folder, proposes a plan (archive newsletters, delete old
promotions), asks consent for each batch of the plan, and acts only on the
subset the person approved. The host's token, not this code, bounds what it
can touch.
"""

from __future__ import annotations

import datetime
from typing import List, Optional

import wit_world
from componentize_py_types import Err
from wit_world import Planned, Report
from wit_world.imports import mail

from agentcap import Denied, Intent, explain, request, tool_function

PROMO_WORDS = (
    "sale",
    "% off",
    "deal",
    "offer",
    "coupon",
    "discount",
    "limited time",
    "save ",
    "free shipping",
    "black friday",
)


def list_folder(folder: str) -> List[mail.MessageSummary]:
    token = request(
        Intent("mail.list")
        .target(folder)
        .summary("look at the folder to propose a triage plan")
    )
    return mail.list(token, folder)


def is_promotion(message: mail.MessageSummary) -> bool:
    subject = message.subject.lower()
    return any(word in subject for word in PROMO_WORDS)


def day_number(date: str) -> Optional[int]:
    """Days since 1970-01-01 of an RFC 3339 date, if it parses."""
    try:
        day = datetime.date(int(date[0:4]), int(date[5:7]), int(date[8:10]))
    except (ValueError, IndexError):
        return None
    return (day - datetime.date(1970, 1, 1)).days


def make_plan(messages: List[mail.MessageSummary], age_days: int) -> List[Planned]:
    days = [d for d in (day_number(m.date) for m in messages) if d is not None]
    newest = max(days) if days else None
    plan = []
    for m in messages:
        if is_promotion(m):
            day = day_number(m.date)
            if newest is None or day is None:
                continue
            age = newest - day
            if age > age_days:
                reason = f"promotion, {age} days older than the newest mail"
                plan.append(Planned(m.id, "delete", reason, m.from_, m.subject, m.date))
        elif m.is_list_mail:
            plan.append(Planned(m.id, "archive", "newsletter", m.from_, m.subject, m.date))
    return plan


class WitWorld(wit_world.WitWorld):
    @tool_function
    def plan(self, folder: str, promotion_age_days: Optional[int]) -> List[Planned]:
        age = 30 if promotion_age_days is None else promotion_age_days
        return make_plan(list_folder(folder), age)

    @tool_function
    def triage(self, folder: str, promotion_age_days: Optional[int]) -> Report:
        messages = list_folder(folder)
        age = 30 if promotion_age_days is None else promotion_age_days
        proposed = make_plan(messages, age)
        report = Report(folder, len(messages), proposed, [], [], [], [], 0)
        for action in ("archive", "delete"):
            batch = [p.id for p in proposed if p.action == action]
            if not batch:
                continue
            if action == "archive":
                summary = f"{len(batch)} newsletters you have not opened lately"
            else:
                summary = f"{len(batch)} promotions that have expired"
            try:
                token = request(Intent(f"mail.{action}").targets(batch).summary(summary))
            except Denied as denied:
                report.refusals.append(denied.explain())
                report.not_approved.extend(batch)
                continue
            approved = token.targets()
            report.not_approved.extend(i for i in batch if i not in approved)
            try:
                if action == "archive":
                    mail.archive(token, approved)
                    report.archived.extend(approved)
                else:
                    mail.delete(token, approved)
                    report.deleted.extend(approved)
            except Err as error:
                report.refusals.append(explain(error))
        report.kept = report.scanned - len(report.archived) - len(report.deleted)
        return report

    @tool_function
    def purge(self, folder: str) -> int:
        messages = list_folder(folder)
        deleted = 0
        # Deliberately ignores refusals and keeps going, like the agent that
        # "ignored repeated stop": the host must end it.
        for m in messages:
            if not is_promotion(m):
                continue
            try:
                token = request(Intent("mail.delete").target(m.id).summary("clean up promotions"))
                mail.delete(token, [m.id])
                deleted += 1
            except (Denied, Err):
                pass
        return deleted
