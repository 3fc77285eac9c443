// Drives the approvals page in headless Chromium, as a user on a phone.
// Usage: node approvals-e2e.mjs PLAN_JSON
//   PLAN_JSON: {"url", "chromium", "phase": "approve" | "stop", "screenshot"}
// Prints one JSON line describing what it did.
//   approve: unticks items 2 and 3 of the first (batch) request, approves the
//            rest, screenshots the next request at phone width, denies it, and
//            waits until the archive's outcome shows in the activity feed.
//   stop:    approves three single-item requests as they appear, then presses
//            STOP EVERYTHING while the fourth waits.
//   read:    reports the visible text (innerText) of the first request's card,
//            then denies it.
import { chromium } from "playwright-core";

const plan = JSON.parse(process.argv[2]);
const browser = await chromium.launch({ executablePath: plan.chromium, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
const report = { phase: plan.phase };
const timeout = 30000;

async function nextRequest(exceptId) {
  const selector = exceptId === undefined
    ? ".card.pending"
    : `.card.pending:not([data-id="${exceptId}"])`;
  const card = page.locator(selector).first();
  await card.waitFor({ timeout });
  return card;
}

try {
  await page.goto(plan.url);
  report.url_after_login = page.url();
  if (plan.phase === "read") {
    const card = await nextRequest();
    report.visible_text = await card.innerText();
    await card.locator("button.deny").click();
  } else if (plan.phase === "approve") {
    const batch = page.locator(`.card.pending[data-id="${await (await nextRequest()).getAttribute("data-id")}"]`);
    const firstId = await batch.getAttribute("data-id");
    report.first_action = await batch.locator(".action").textContent();
    const boxes = batch.locator("input[type=checkbox]");
    report.first_items = await boxes.count();
    await boxes.nth(1).uncheck();
    await boxes.nth(2).uncheck();
    await batch.locator("button.approve-selected").click();
    const second = await nextRequest(firstId);
    report.second_action = await second.locator(".action").textContent();
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: plan.screenshot, fullPage: false });
    await second.locator("button.deny").click();
    await page.locator("#feed li.outcome", { hasText: "mail.archive" }).first().waitFor({ timeout });
    report.feed_outcome = await page.locator("#feed li.outcome").first().textContent();
  } else {
    let lastId;
    report.approved = [];
    for (let i = 0; i < 3; i++) {
      const id = await (await nextRequest(lastId)).getAttribute("data-id");
      const card = page.locator(`.card.pending[data-id="${id}"]`);
      lastId = id;
      report.approved.push(await card.locator(".action").textContent());
      await card.locator("button.approve-all").click();
    }
    await nextRequest(lastId);
    await page.locator("#stop-all").click();
    await page.locator("#status", { hasText: "Stopped" }).waitFor({ timeout });
    report.status = await page.locator("#status").textContent();
    await page.locator(".session .stopped").first().waitFor({ timeout });
    report.session_marked_stopped = true;
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
