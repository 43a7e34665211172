// The main path: sign up → consent → send → answer (echo model) → reload → history →
// sign out → the chat page asks for sign-in. Screenshots at 360 px and 1280 px.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { ARTIFACTS, BASE, launch, sendMessage, uniqueEmail } from './helpers.js';

let browser;
before(async () => {
  browser = await launch();
  await mkdir(ARTIFACTS, { recursive: true });
});
after(async () => {
  await browser?.close();
});

test('sign up, consent, chat with an answer, history after reload, sign out', async () => {
  const page = await browser.page();
  // Record every status a message goes through, as the page shows it.
  await page.addInitScript(() => {
    window.seenStatuses = [];
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.attributeName === 'data-status' && r.target instanceof HTMLElement) {
          window.seenStatuses.push(r.target.dataset.status);
        }
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-status'] });
  });

  // Signed out, the chat page asks for sign-in.
  await page.goto(`${BASE}/chat`);
  await page.waitForURL(`${BASE}/signin`);
  await page.click('text=Sign up');
  await page.waitForURL(`${BASE}/signup`);

  const email = uniqueEmail('main');
  await page.fill('#signup-form input[name=email]', email);
  await page.fill('#signup-form input[name=password]', 'correct horse battery');
  await page.click('#signup-form button[type=submit]');

  // The consent screen, once, after sign-up.
  await page.waitForURL(`${BASE}/welcome`);
  await page.getByText('What we store and why').waitFor();
  await page.check('#profile-form input[name=keep_history]');
  await page.fill('#profile-form input[name=display_name]', 'Ada');
  await page.click('#profile-submit');
  await page.waitForURL(`${BASE}/chat`);
  await page.waitForFunction(() => document.querySelector('#who').textContent === 'Ada');
  const signedIn = await browser.context.cookies();
  assert.ok(signedIn.some((c) => c.name === '__Host-aira_session' && c.httpOnly && c.secure), 'Secure session cookie kept on http://127.0.0.1');

  // Send a message; the answer arrives over the event stream, without a reload.
  const item = await sendMessage(page, 'hello from the browser');
  await item.locator('.answer').getByText('echo: hello from the browser').waitFor();
  assert.equal(await item.getAttribute('data-status'), 'answered');
  const seen = await page.evaluate(() => window.seenStatuses);
  assert.equal(seen[0], 'queued', `first status shown: ${seen}`);
  assert.equal(seen[seen.length - 1], 'answered', `last status shown: ${seen}`);
  assert.match(page.url(), /\/chat\/[0-9a-f-]{36}$/, 'the new conversation has its own address');
  assert.equal(await page.locator('#conversation-list li').count(), 1);

  // Screenshots of the chat view, desktop and narrow phone.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(ARTIFACTS, 'chat-1280.png'), fullPage: true });
  await page.setViewportSize({ width: 360, height: 740 });
  await item.locator('.answer').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at 360 px (overflow ${overflow} px)`);
  const send = await page.locator('#send').boundingBox();
  assert.ok(send && send.x + send.width <= 360, 'the send button is on screen at 360 px');
  await page.screenshot({ path: join(ARTIFACTS, 'chat-360.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  // A second message in the same conversation.
  const second = await sendMessage(page, 'and a second one');
  await second.locator('.answer').getByText('echo: and a second one').waitFor();

  // Reload: the history comes from the store.
  await page.reload();
  await page.locator('#messages > li').nth(1).waitFor();
  const prompts = await page.locator('#messages .prompt').allTextContents();
  assert.deepEqual(prompts, ['hello from the browser', 'and a second one']);
  const answers = await page.locator('#messages .answer').allTextContents();
  assert.deepEqual(answers, ['echo: hello from the browser', 'echo: and a second one']);

  // Sign out: the server revokes the session; the chat page now asks for sign-in.
  await page.click('#signout');
  await page.waitForURL(`${BASE}/signin`);
  await page.goto(`${BASE}/chat`);
  await page.waitForURL(`${BASE}/signin`);
  await page.locator('#signin-form').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#view-chat').isVisible(), false);
  // Playwright filters Secure cookies out of cookies(httpUrl): read them all.
  const cookies = await browser.context.cookies();
  assert.ok(!cookies.some((c) => c.name === '__Host-aira_session'), `session cookie cleared: ${JSON.stringify(cookies)}`);

  // Signing in again shows the same history; the consent screen is not shown again.
  await page.fill('#signin-form input[name=email]', email);
  await page.fill('#signin-form input[name=password]', 'correct horse battery');
  await page.click('#signin-form button[type=submit]');
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  await page.locator('#messages .answer').nth(1).waitFor();
  await page.close();
});
