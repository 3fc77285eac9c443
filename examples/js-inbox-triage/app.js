// js-inbox-triage: the inbox-triage example tool, written in JavaScript.
//
// It implements the same world as the Rust tool (examples/inbox-triage/wit):
// it lists a mail folder, proposes a plan (archive newsletters, delete old
// promotions), asks consent for each batch of the plan, and acts only on the
// subset the person approved. The host's token, not this code, bounds what
// it can touch.

import * as mail from 'agentcap:tools/mail@0.1.0';
import { Denied, Intent, explain, request, toolFunction } from '../../sdk/js/agentcap.js';

const PROMO_WORDS = [
  'sale', '% off', 'deal', 'offer', 'coupon', 'discount', 'limited time', 'save ',
  'free shipping', 'black friday',
];

function listFolder(folder) {
  const token = request(
    new Intent('mail.list').target(folder).summary('look at the folder to propose a triage plan'),
  );
  return mail.list(token, folder);
}

function isPromotion(m) {
  const subject = m.subject.toLowerCase();
  return PROMO_WORDS.some((w) => subject.includes(w));
}

/** Days since 1970-01-01 of an RFC 3339 date, if it parses. */
function dayNumber(date) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(date);
  if (!m) return undefined;
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 86400000);
}

function makePlan(messages, ageDays) {
  const days = messages.map((m) => dayNumber(m.date)).filter((d) => d !== undefined);
  const newest = days.length ? Math.max(...days) : undefined;
  const plan = [];
  for (const m of messages) {
    const planned = (action, reason) => ({
      id: m.id, action, reason, from: m.from, subject: m.subject, date: m.date,
    });
    if (isPromotion(m)) {
      const day = dayNumber(m.date);
      if (newest === undefined || day === undefined) continue;
      const age = newest - day;
      if (age > ageDays) plan.push(planned('delete', `promotion, ${age} days older than the newest mail`));
    } else if (m.isListMail) {
      plan.push(planned('archive', 'newsletter'));
    }
  }
  return plan;
}

export const plan = toolFunction((folder, promotionAgeDays) =>
  makePlan(listFolder(folder), promotionAgeDays ?? 30));

export const triage = toolFunction((folder, promotionAgeDays) => {
  const messages = listFolder(folder);
  const proposed = makePlan(messages, promotionAgeDays ?? 30);
  const report = {
    folder, scanned: messages.length, proposed, archived: [], deleted: [],
    notApproved: [], refusals: [], kept: 0,
  };
  for (const action of ['archive', 'delete']) {
    const batch = proposed.filter((p) => p.action === action).map((p) => p.id);
    if (batch.length === 0) continue;
    const summary = action === 'archive'
      ? `${batch.length} newsletters you have not opened lately`
      : `${batch.length} promotions that have expired`;
    let token;
    try {
      token = request(new Intent(`mail.${action}`).targets(batch).summary(summary));
    } catch (error) {
      if (!(error instanceof Denied)) throw error;
      report.refusals.push(error.explain());
      report.notApproved.push(...batch);
      continue;
    }
    const approved = token.targets();
    report.notApproved.push(...batch.filter((id) => !approved.includes(id)));
    try {
      if (action === 'archive') {
        mail.archive(token, approved);
        report.archived.push(...approved);
      } else {
        mail.delete(token, approved);
        report.deleted.push(...approved);
      }
    } catch (error) {
      report.refusals.push(explain(error));
    }
  }
  report.kept = report.scanned - report.archived.length - report.deleted.length;
  return report;
});

// Deliberately ignores refusals and keeps going, like the agent that
// "ignored repeated stop": the host must end it.
export const purge = toolFunction((folder) => {
  let deleted = 0;
  for (const m of listFolder(folder).filter(isPromotion)) {
    try {
      const token = request(new Intent('mail.delete').target(m.id).summary('clean up promotions'));
      mail.delete(token, [m.id]);
      deleted += 1;
    } catch (error) {
      // refused: carry on
    }
  }
  return deleted;
});
