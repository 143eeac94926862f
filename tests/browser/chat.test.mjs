// End-to-end test of the web chat page against a running Inferno (env INFERNO_URL), in Debian's
// Chromium driven by playwright-core. Run through run.sh, or by hand:
//   INFERNO_URL=http://127.0.0.1:8080 node tests/browser/chat.test.mjs
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = (process.env.INFERNO_URL || '').replace(/\/+$/, '');
if (!BASE) {
  console.error('set INFERNO_URL to the base URL of a running server, e.g. http://127.0.0.1:8080');
  process.exit(2);
}
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCREENSHOT = resolve(REPO, process.env.INFERNO_SCREENSHOT || 'target/browser/chat.png');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function step(name) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${name}`);
}

// Work in progress over all models of GET /status: sequences decoding (`engine.slots_busy`),
// requests queued for a slot (`engine.queue_length`) and requests holding a model (`in_flight`,
// where the server reports it). An unloaded model has `engine: null`.
async function engine() {
  const response = await fetch(`${BASE}/status`);
  assert.equal(response.status, 200, 'GET /status');
  const { models } = await response.json();
  assert.ok(Array.isArray(models) && models.length > 0, 'GET /status lists models');
  const sum = (f) => models.reduce((n, m) => n + (f(m) ?? 0), 0);
  return { slots_busy: sum((m) => m.engine?.slots_busy), queue_length: sum((m) => m.engine?.queue_length),
    in_flight: sum((m) => m.in_flight) };
}

async function waitReady(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`${BASE}/ready`)).status === 200) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`${BASE}/ready not 200 within ${timeoutMs} ms`);
    await sleep(200);
  }
}

// Waits until the server runs no sequence and queues nothing; returns the last snapshot.
async function waitIdle(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await engine();
    if (stats.slots_busy === 0 && stats.queue_length === 0 && stats.in_flight === 0) return stats;
    if (Date.now() > deadline) throw new Error(`engine still busy after ${timeoutMs} ms: ${JSON.stringify(stats)}`);
    await sleep(100);
  }
}

const lastAnswer = (page) => page.locator('#transcript .msg.assistant').last();
const answerText = (page) => lastAnswer(page).locator('.content').innerText();

async function setNumber(page, selector, value) {
  await page.fill(selector, String(value));
  await page.dispatchEvent(selector, 'change');
}

async function ask(page, text) {
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  await page.waitForSelector('#transcript .msg.assistant[data-state="streaming"]');
}

// Two observations of the streaming answer, the second strictly longer than the first.
async function observeGrowth(page) {
  const growing = (min) => page.waitForFunction((n) => {
    const msgs = document.querySelectorAll('#transcript .msg.assistant');
    const last = msgs[msgs.length - 1];
    return last && last.dataset.state === 'streaming'
      && last.querySelector('.content').textContent.length > n
      && last.querySelector('.content').textContent.length;
  }, min, { polling: 'raf', timeout: 60_000 });
  const first = await (await growing(0)).jsonValue();
  const second = await (await growing(first)).jsonValue();
  assert.ok(second > first && first > 0, `text grew from ${first} to ${second}`);
  return [first, second];
}

async function main() {
  await waitReady(120_000);
  await waitIdle(30_000);
  const profile = mkdtempSync(join(tmpdir(), 'inferno-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1100, height: 800 },
  });
  const problems = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
    page.on('response', (res) => {
      if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
    });
    page.on('request', (req) => {
      if (!req.url().startsWith(`${BASE}/`)) problems.push(`request outside the server: ${req.url()}`);
    });

    step('load the page');
    const response = await page.goto(`${BASE}/`);
    assert.equal(response.status(), 200, 'GET /');
    await page.waitForFunction(() => document.querySelector('#model').options.length > 0);
    const model = (await (await fetch(`${BASE}/v1/models`)).json()).data[0].id;
    assert.equal(await page.inputValue('#model'), model);
    assert.equal(await page.inputValue('#system'), 'You are a helpful assistant.');
    await setNumber(page, '#temperature', 0);
    await setNumber(page, '#max-tokens', 160);

    await page.fill('#prompt', 'line one');
    await page.press('#prompt', 'Shift+Enter');
    assert.equal(await page.inputValue('#prompt'), 'line one\n', 'Shift+Enter adds a new line');
    assert.equal(await page.locator('#transcript .msg').count(), 0, 'Shift+Enter does not send');

    step('first message streams');
    const first = 'Tell me a short story about a dragon who learns to bake bread.';
    await ask(page, first);
    const growth = await observeGrowth(page);
    await page.waitForSelector('#transcript .msg.assistant[data-state="done"]', { timeout: 120_000 });
    const answer = await answerText(page);
    assert.ok(answer.trim().length > 0, 'first answer is not empty');
    const meta = await lastAnswer(page).locator('.meta').innerText();
    assert.match(meta, /first token \d+\.\d\d s/, `stats line: ${meta}`);
    assert.match(meta, /tokens\/s/, `stats line: ${meta}`);
    console.log(`  text grew ${growth[0]} -> ${growth[1]} chars; final ${answer.length}; ${meta}`);

    step('second message, stopped mid-answer');
    await setNumber(page, '#max-tokens', 3000);
    await ask(page, 'Write a very long and detailed essay on the history of the Roman Empire, '
      + 'from its founding to its fall, with many sections.');
    await observeGrowth(page);
    const busy = await engine();
    assert.ok(busy.slots_busy >= 1, `a sequence runs while streaming: ${JSON.stringify(busy)}`);
    await page.click('#stop');
    const stoppedAt = Date.now();
    await page.waitForSelector('#transcript .msg.assistant[data-state="stopped"]', { timeout: 10_000 });
    const stoppedText = await answerText(page);
    assert.ok(stoppedText.length > 0, 'the stopped answer keeps its text');
    assert.equal(await page.isEnabled('#send'), true, 'send is enabled again');
    assert.equal(await page.isDisabled('#stop'), true, 'stop is disabled again');
    const idle = await waitIdle(15_000);
    console.log(`  stopped after ${stoppedText.length} chars; engine idle ${Date.now() - stoppedAt} ms after stop`
      + ` (${JSON.stringify(idle)})`);
    await sleep(300);
    assert.equal(await answerText(page), stoppedText, 'no text arrives after stop');

    step('reload keeps the conversation');
    await page.reload();
    await page.waitForSelector('#transcript .msg.assistant');
    const titles = await page.locator('#conversations .open').allInnerTexts();
    assert.ok(titles.some((t) => first.startsWith(t.trim())), `conversation listed: ${titles}`);
    const users = await page.locator('#transcript .msg.user .content').allInnerTexts();
    assert.equal(users.length, 2, 'both questions kept');
    assert.equal(users[0], first);
    const answers = await page.locator('#transcript .msg.assistant .content').allInnerTexts();
    assert.equal(answers[0], answer, 'first answer kept');
    assert.equal(answers[1], stoppedText, 'stopped answer kept');
    assert.match(await page.locator('#transcript .msg.assistant .meta').last().innerText(), /stopped/);

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    step(`screenshot: ${SCREENSHOT}`);

    step('model text is rendered safely');
    await page.evaluate(() => {
      const evil = 'Hi <img src=x onerror="window.pwned=1"> **bold** `<b>code</b>`\n\n'
        + '[bad](javascript:window.pwned=1) [good](https://example.org/a) <script>window.pwned=1</script>\n\n'
        + '- one\n- _two_\n\n```html\n<script>window.pwned=1</script>\n```';
      const list = JSON.parse(localStorage.getItem('inferno.conversations'));
      list.unshift({ id: 'evil', title: 'Markdown check', created: Date.now(), messages: [
        { role: 'user', content: '<i>not italic</i>' },
        { role: 'assistant', content: evil, state: 'done' }] });
      localStorage.setItem('inferno.conversations', JSON.stringify(list));
      localStorage.setItem('inferno.current', JSON.stringify('evil'));
    });
    await page.reload();
    await page.waitForSelector('#transcript .msg.assistant');
    const rendered = page.locator('#transcript .msg.assistant .content');
    assert.equal(await rendered.locator('img, script, b, i').count(), 0, 'no raw HTML elements');
    assert.equal(await page.locator('#transcript i').count(), 0, 'user text is not HTML');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await rendered.locator('strong').innerText(), 'bold');
    assert.equal(await rendered.locator('p code').innerText(), '<b>code</b>');
    const links = await rendered.locator('a').evaluateAll((as) => as.map((a) => [a.href, a.rel]));
    assert.deepEqual(links, [['https://example.org/a', 'noopener noreferrer']]);
    assert.equal(await rendered.locator('ul li').count(), 2);
    assert.equal(await rendered.locator('li em').innerText(), 'two');
    assert.equal(await rendered.locator('.code pre code').innerText(), '<script>window.pwned=1</script>');
    assert.equal(await rendered.locator('.code button').innerText(), 'Copy');

    step('delete a conversation');
    page.once('dialog', (dialog) => dialog.accept());
    await page.click('#conversations li:first-child .delete');
    assert.deepEqual(await page.locator('#conversations .open').allInnerTexts(),
      titles, 'only the deleted conversation is gone');

    step('phone width');
    await page.setViewportSize({ width: 375, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow})`);
    assert.equal(await page.isVisible('#prompt'), true);
    await page.click('#menu-toggle');
    assert.equal(await page.isVisible('#new-chat'), true, 'the menu opens the sidebar');

    assert.deepEqual(problems, [], 'no page errors, console errors or foreign requests');

    step('errors are shown (responses faked in the browser)');
    await page.click('#menu-toggle');
    assert.equal(await page.isVisible('#new-chat'), false, 'the menu closes again');
    await page.setViewportSize({ width: 1100, height: 800 });
    const error = (status, message, headers = {}) => (route) => route.fulfill({
      status, headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ error: { message, type: 'x', param: null, code: null } }) });
    await page.route('**/v1/chat/completions', error(503, 'The queue is full', { 'Retry-After': '7' }));
    await page.fill('#prompt', 'fails');
    await page.press('#prompt', 'Enter');
    await page.waitForSelector('#transcript .msg.assistant[data-state="error"]');
    assert.equal(await lastAnswer(page).locator('.error').innerText(),
      'Error 503: The queue is full (retry after 7 s)');
    await page.route('**/v1/models', error(401, 'You didn\'t provide an API key'));
    await page.reload();
    await page.waitForSelector('#api-key', { state: 'visible' });
    assert.match(await page.innerText('#notice'), /^Error 401: You didn't provide an API key/);
    await page.unroute('**/v1/models');
    await page.unroute('**/v1/chat/completions');
    const authorized = page.waitForRequest('**/v1/models');
    await page.fill('#api-key', 'sk-test-key');
    await page.dispatchEvent('#api-key', 'change');
    assert.equal((await authorized).headers().authorization, 'Bearer sk-test-key');
    await page.waitForSelector('#notice', { state: 'hidden' });
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => {
  step('PASS');
}, (err) => {
  console.error(err);
  step('FAIL');
  process.exitCode = 1;
});
