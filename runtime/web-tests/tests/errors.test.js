// The error states a user meets, and the security of the page: wrong password, CSRF
// refusal, security headers, export and deletion, rate limiting, the LLM down (retry),
// and the network lost during a stream (reconnect and catch up from the store).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';

import { BASE, PASSWORD, launch, sendMessage, signUp, startFakeLlm, startServer, uniqueEmail } from './helpers.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function fresh() {
  await browser.context.clearCookies();
  return browser.page();
}

test('wrong password shows an error and keeps the user signed out', async () => {
  const page = await fresh();
  const email = uniqueEmail('wrong');
  await signUp(page, BASE, email);
  await page.click('#signout');
  await page.waitForURL(`${BASE}/signin`);
  await page.fill('#signin-form input[name=email]', email);
  await page.fill('#signin-form input[name=password]', 'not the password');
  await page.click('#signin-form button[type=submit]');
  await page.getByText('Wrong email or password.').waitFor();
  assert.equal(page.url(), `${BASE}/signin`);
  await page.goto(`${BASE}/chat`);
  await page.waitForURL(`${BASE}/signin`);
  await page.close();
});

test('security headers: CSP without inline script, nosniff, referrer policy, no framing', async () => {
  const page = await fresh();
  const res = await page.goto(`${BASE}/signin`);
  const h = res.headers();
  const csp = h['content-security-policy'];
  assert.ok(csp, 'CSP header present');
  for (const part of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(part), `CSP has ${part}: ${csp}`);
  }
  assert.ok(!csp.includes('unsafe-inline'), csp);
  assert.equal(h['x-content-type-options'], 'nosniff');
  assert.equal(h['referrer-policy'], 'no-referrer');
  // The CSP is enforced: an inline script injected into the page does not run.
  const ran = await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.inlineRan = true';
    document.body.append(s);
    return window.inlineRan === true;
  });
  assert.equal(ran, false, 'inline script blocked by the CSP');
  await page.close();
});

test('CSRF: a cookie-authenticated write without the token, or from another origin, is refused', async () => {
  const page = await fresh();
  await signUp(page, BASE, uniqueEmail('csrf'));
  // Same page, but without the X-CSRF-Token header (what a forged form or fetch would send).
  const noToken = await page.evaluate(async () => {
    const r = await fetch('/v1/conversations', { method: 'POST' });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(noToken.status, 403);
  assert.equal(noToken.body.error, 'csrf');
  // A cross-site request: the browser's cookie, another Origin, even with a guessed token.
  const cross = await browser.context.request.post(`${BASE}/v1/conversations`, {
    headers: { Origin: 'http://evil.example', 'X-CSRF-Token': 'guess' },
  });
  assert.equal(cross.status(), 403);
  // The page's own calls carry the token and succeed.
  const ok = await page.evaluate(async () => {
    const token = document.cookie.split('; ').find((c) => c.startsWith('__Host-aira_csrf=')).split('=')[1];
    const r = await fetch('/v1/conversations', { method: 'POST', headers: { 'X-CSRF-Token': token } });
    return r.status;
  });
  assert.equal(ok, 201);
  // The session cookie itself is out of the script's reach.
  assert.equal(await page.evaluate(() => document.cookie.includes('aira_session')), false);
  const session = (await browser.context.cookies()).find((c) => c.name === '__Host-aira_session' && c.domain === new URL(BASE).hostname);
  assert.ok(session.httpOnly && session.secure && session.sameSite === 'Lax', JSON.stringify(session));
  await page.close();
});

test('export my data as JSON, then delete the account', async () => {
  const page = await fresh();
  const email = uniqueEmail('export');
  await signUp(page, BASE, email, 'Grace');
  const item = await sendMessage(page, 'keep this for the export');
  await item.locator('.answer').waitFor();
  await page.click('a[href="/settings"]');
  await page.waitForURL(`${BASE}/settings`);
  await page.locator('#account-tools').waitFor({ state: 'visible' });
  assert.equal(await page.inputValue('#profile-form input[name=display_name]'), 'Grace');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-link')]);
  const data = JSON.parse(await readFile(await download.path(), 'utf8'));
  assert.equal(data.user.email, email);
  assert.equal(data.profile.display_name, 'Grace');
  assert.equal(data.conversations[0].messages[0].content, 'keep this for the export');
  assert.equal(data.conversations[0].messages[0].answer, 'echo: keep this for the export');

  await page.fill('#delete-form input[name=password]', 'not the password');
  await page.click('#delete-form button[type=submit]');
  await page.getByText('Wrong password.').waitFor();
  await page.fill('#delete-form input[name=password]', PASSWORD);
  await page.click('#delete-form button[type=submit]');
  await page.waitForURL(`${BASE}/signup`);
  await page.getByText('Your account and all its data were deleted.').waitFor();
  await page.goto(`${BASE}/signin`);
  await page.fill('#signin-form input[name=email]', email);
  await page.fill('#signin-form input[name=password]', PASSWORD);
  await page.click('#signin-form button[type=submit]');
  await page.getByText('Wrong email or password.').waitFor();
  await page.close();
});

test('history not kept: the answer is shown once, and a reload finds the conversation empty', async () => {
  const page = await fresh();
  try {
    await signUp(page, BASE, uniqueEmail('unkept'), '', false);
    const item = await sendMessage(page, 'forget me');
    await item.locator('.answer').getByText('echo: forget me').waitFor();
    await page.reload();
    await page.locator('#view-chat').waitFor({ state: 'visible' });
    await page.locator('#empty-chat').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#messages > li').count(), 0, 'deleted once delivered');
  } finally {
    await page.close();
  }
});

test('rate limited: the wait time from Retry-After is shown', async () => {
  const server = await startServer({ env: { AIRA_RATE_BURST: '1', AIRA_RATE_PER_MINUTE: '1' } });
  const page = await fresh();
  try {
    await signUp(page, server.url, uniqueEmail('rate'));
    const first = await sendMessage(page, 'first');
    await first.locator('.answer').waitFor();
    await page.fill('#prompt', 'second, too soon');
    await page.click('#send');
    const error = page.locator('#compose-error');
    await error.getByText(/Try again in \d+ s/).waitFor();
    const seconds = Number((await error.textContent()).match(/in (\d+) s/)[1]);
    assert.ok(seconds >= 50 && seconds <= 60, `wait shown: ${seconds} s`);
    assert.equal(await page.locator('#send').isDisabled(), true, 'send is disabled while waiting');
    assert.equal(await page.inputValue('#prompt'), 'second, too soon', 'the text is kept');
  } finally {
    await page.close();
    await server.stop();
  }
});

test('backlog at its bound: the page says so and counts down, keeping the text', async () => {
  // The model takes a minute: the first message stays in the queue, at the bound of 1.
  const llm = await startFakeLlm(() => 200, 60_000);
  const env = { AIRA_LLM_BASE_URL: llm.baseUrl, AIRA_LLM_API_KEY: 'sk-test', AIRA_MAX_BACKLOG: '1' };
  const server = await startServer({ env });
  const page = await fresh();
  try {
    await signUp(page, server.url, uniqueEmail('busy'));
    await sendMessage(page, 'first');
    await page.fill('#prompt', 'second, while the first waits');
    await page.click('#send');
    const error = page.locator('#compose-error');
    await error.getByText(/Many messages are waiting to be answered\. Try again in \d+ s/).waitFor();
    assert.equal(await page.locator('#send').isDisabled(), true, 'send is disabled while waiting');
    assert.equal(await page.inputValue('#prompt'), 'second, while the first waits', 'the text is kept');
    await page.waitForFunction(() => !document.querySelector('#send').disabled, null, { timeout: 5000 });
    assert.equal(await page.locator('#messages > li').count(), 1, 'the refused message was not added');
  } finally {
    await page.close();
    await server.stop();
    await llm.close();
  }
});

test('the LLM down: the message fails and "Retry" asks again for the same message', async () => {
  // The first call is refused (401: fails at once, no retries); later calls answer.
  const llm = await startFakeLlm((n) => (n === 0 ? 401 : 200));
  const server = await startServer({ env: { AIRA_LLM_BASE_URL: llm.baseUrl, AIRA_LLM_API_KEY: 'sk-test' } });
  const page = await fresh();
  try {
    await signUp(page, server.url, uniqueEmail('down'));
    const item = await sendMessage(page, 'are you there?');
    await item.locator('.failure .error').waitFor();
    assert.equal(await item.getAttribute('data-status'), 'failed');
    await item.getByRole('button', { name: 'Retry' }).click();
    await item.locator('.answer').getByText('fake: are you there?').waitFor();
    assert.equal(await item.getAttribute('data-status'), 'answered');
    assert.equal(await page.locator('#messages > li').count(), 1, 'answered in place, not sent again as a new message');
    assert.equal(llm.calls(), 2);
  } finally {
    await page.close();
    await server.stop();
    await llm.close();
  }
});

test('network lost during a stream: the page reconnects and catches up from the store', async () => {
  // A slow model, so the answer is still pending when the connection drops.
  const llm = await startFakeLlm(() => 200, 1500);
  const env = { AIRA_LLM_BASE_URL: llm.baseUrl, AIRA_VISIBILITY_TIMEOUT_SECS: '2' };
  let server = await startServer({ env });
  const page = await fresh();
  try {
    await signUp(page, server.url, uniqueEmail('offline'));
    const item = await sendMessage(page, 'through the outage');
    // The connection dies (the server crashes): the stream errors, the page says so.
    await server.kill();
    await item.locator('.status').getByText('Reconnecting…').waitFor();
    // Back on the same address and store: the stream reconnects and the answer arrives.
    server = await startServer({ env, listen: server.listen, data: server.data });
    await item.locator('.answer').getByText('fake: through the outage').waitFor({ timeout: 30000 });
    assert.equal(await item.getAttribute('data-status'), 'answered');
  } finally {
    await page.close();
    await server.stop();
    await llm.close();
  }
});

test('a send whose answer was lost is sent again with the same key: one message, not two', async () => {
  const page = await fresh();
  await signUp(page, BASE, uniqueEmail('lost'));
  let lost = false;
  await page.route('**/v1/conversations/*/messages', async (route) => {
    if (!lost && route.request().method() === 'POST') {
      lost = true;
      await route.fetch(); // the server records the message…
      await route.abort('connectionreset'); // …and its answer never reaches the page
      return;
    }
    await route.continue();
  });
  await page.fill('#prompt', 'only once, please');
  await page.click('#send');
  await page.getByText('The server cannot be reached').waitFor();
  assert.equal(await page.inputValue('#prompt'), 'only once, please', 'the text stays for the retry');
  await page.click('#send');
  await page.locator('#messages > li').first().waitFor();
  const stored = await page.evaluate(async () => {
    const list = await (await fetch('/v1/conversations')).json();
    const conv = await (await fetch(`/v1/conversations/${list.conversations[0].id}`)).json();
    return conv.messages.map((m) => m.content);
  });
  assert.deepEqual(stored, ['only once, please']);
  assert.equal(await page.locator('#messages > li').count(), 1);
  await page.close();
});
