// The pipeline board in a real headless Chromium (Debian's, driven by
// playwright-core). Run by tests/it/board.rs, which starts the daemon and the
// mail servers, passes what to act on in the environment, and checks the
// database after each step.
//
// Protocol: after each step this script prints one JSON line
// `{"event": NAME, ...}` on stdout and waits for the line `go` on stdin
// (the Rust side checks the database, or appends the IMAP reply, first).
// Anything else on stdout or stderr is log.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this through cargo test --test it board)`);
  return v;
};
const BASE = env('BASE_URL');

const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function tell(event, data = {}) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
  if (event === 'done') return;
  const { value, done } = await input.next();
  if (done || value.trim() !== 'go') throw new Error(`the test stopped after ${event}: ${value}`);
}

function check(ok, message) {
  if (!ok) throw new Error(message);
}

const columnSel = (stage) => `.column[data-stage="${stage}"]`;
const cardSel = (id) => `.card[data-id="${id}"]`;

async function signIn(page, token) {
  await page.goto(BASE + '/');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#columns .column');
}

async function columns(page) {
  return page.evaluate(() => {
    const out = {};
    for (const c of document.querySelectorAll('.column')) {
      out[c.dataset.stage] = {
        count: Number(c.querySelector('[data-count]').dataset.count),
        total: Number(c.querySelector('[data-total]').dataset.total),
        cards: c.querySelectorAll('.card').length,
      };
    }
    return out;
  });
}

async function inColumn(page, id, stage, timeout = 20000) {
  await page.waitForSelector(`${columnSel(stage)} ${cardSel(id)}`, { timeout });
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  // Playwright gives every launch a fresh, empty profile directory itself.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

// MODE=thousand: a big board (the Rust side imported 1,000 leads): it
// renders, a drag still works, and how long each took is reported.
async function thousand() {
  const context = await browser.newContext({ viewport: { width: 1600, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  const t0 = Date.now();
  await signIn(page, env('MANAGER_TOKEN'));
  const signInMs = Date.now() - t0;
  const nav = await page.evaluate(() => {
    const n = performance.getEntriesByType('navigation')[0];
    return { responseEnd: n.responseEnd, domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize };
  });
  const cards = await page.locator('.card').count();
  const id = env('DRAG_ID');
  const from = await page.getAttribute(cardSel(id), 'data-stage');
  const to = 'qualification';
  const before = (await columns(page))[to].count;
  const t1 = Date.now();
  await page.locator(cardSel(id)).dragTo(page.locator(`${columnSel(to)} .cards`));
  await page.waitForFunction(
    ([stage, n]) => Number(document.querySelector(`.column[data-stage="${stage}"] [data-count]`).dataset.count) === n,
    [to, before + 1],
  );
  const dragMs = Date.now() - t1;
  await tell('thousand', { cards, from, to, signInMs, dragMs, nav, columns: await columns(page) });
  await tell('done');
}

try {
  if (process.env.MODE === 'thousand') {
    await thousand();
    await browser.close();
    process.exit(0);
  }
  const context = await browser.newContext({ viewport: { width: 1600, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && console.error(`console: ${m.text()}`));

  // 1. Sign in as the manager.
  await signIn(page, env('MANAGER_TOKEN'));
  const cookie = (await context.cookies()).find((c) => c.name === 'cadence_session');
  check(cookie, 'no session cookie');
  const scriptSeesCookie = await page.evaluate(() => document.cookie.includes('cadence_session'));
  await tell('signed-in', { cookie: { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite }, scriptSeesCookie });

  // 2. The columns, with their counts and totals.
  const stages = await page.$$eval('.column', (cs) => cs.map((c) => c.dataset.stage));
  const flags = await page.textContent('#flags');
  await tell('columns', { stages, columns: await columns(page), flags });

  // 3. Drag a card to the next column.
  const dragId = env('DRAG_ID');
  const from = await page.getAttribute(cardSel(dragId), 'data-stage');
  const to = stages[stages.indexOf(from) + 1];
  const before = await columns(page);
  await page.locator(cardSel(dragId)).dragTo(page.locator(`${columnSel(to)} .cards`));
  await inColumn(page, dragId, to);
  await page.waitForFunction(
    ([stage, n]) => Number(document.querySelector(`.column[data-stage="${stage}"] [data-count]`).dataset.count) === n,
    [to, before[to].count + 1],
  );
  await tell('dragged', { from, to });

  // 4. Its timeline.
  await page.locator(`${cardSel(dragId)} .name`).click();
  await page.waitForSelector('dialog#timeline[open] .touch');
  const kinds = await page.$$eval('dialog#timeline .touch', (ts) => ts.map((t) => t.dataset.kind));
  const text = await page.textContent('dialog#timeline');
  await page.screenshot({ path: env('TIMELINE_SCREENSHOT') });
  await page.keyboard.press('Escape');
  await page.waitForSelector('dialog#timeline:not([open])', { state: 'attached' });
  await tell('timeline', { kinds, text });

  // 5. Move a card with the keyboard alone: its menu, arrow keys, Enter.
  const keyId = env('KEYBOARD_ID');
  async function chooseFromMenu(id, label) {
    await page.focus(`${cardSel(id)} .more`);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#menu:not([hidden]) [role="menuitem"]');
    for (let i = 0; i < 20; i++) {
      const focused = await page.evaluate(() => document.activeElement.textContent);
      if (focused === label) break;
      await page.keyboard.press('ArrowDown');
    }
    check((await page.evaluate(() => document.activeElement.textContent)) === label, `no "${label}" in the menu`);
    await page.keyboard.press('Enter');
  }
  const wonBefore = (await columns(page)).won.count;
  await chooseFromMenu(keyId, 'Move to won');
  await inColumn(page, keyId, 'won');
  await page.waitForFunction(
    (n) => Number(document.querySelector('.column[data-stage="won"] [data-count]').dataset.count) === n,
    wonBefore + 1,
  );
  await tell('keyboard-moved', { to: 'won' });

  // 6. Pause from the card.
  const pauseId = env('PAUSE_ID');
  await chooseFromMenu(pauseId, 'Pause');
  await page.waitForSelector(`${cardSel(pauseId)}[data-state="paused"]`);
  await tell('paused');

  // 7. A reply arrives over IMAP: the card moves without a reload.
  await page.evaluate(() => { window.__sameDocument = true; });
  const replyId = env('REPLY_ID');
  const replyFrom = await page.getAttribute(cardSel(replyId), 'data-stage');
  await tell('ready-for-reply', { from: replyFrom });
  await inColumn(page, replyId, 'connecting', 30000);
  const reloaded = !(await page.evaluate(() => window.__sameDocument === true));
  await page.waitForSelector(`${cardSel(replyId)}[data-state="replied"]`);
  await page.mouse.move(0, 0);
  await page.setViewportSize({ width: 1600, height: 820 });
  await page.screenshot({ path: env('SCREENSHOT') });
  await tell('reply-moved', { reloaded });

  // 8. A rep's own board.
  const repContext = await browser.newContext({ viewport: { width: 1600, height: 900 } });
  const repPage = await repContext.newPage();
  await signIn(repPage, env('REP_TOKEN'));
  const ids = await repPage.$$eval('.card', (cs) => cs.map((c) => c.dataset.id));
  const others = new Set(env('OTHER_REP_IDS').split(','));
  await tell('rep-view', { ownCards: ids.length, otherRepCards: ids.filter((id) => others.has(id)).length });
  await repContext.close();

  await tell('done');
} finally {
  await browser.close();
}
process.exit(0);
