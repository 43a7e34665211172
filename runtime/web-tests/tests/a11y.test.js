// Every screen passes axe-core's WCAG 2.1 A and AA rules and its best practices, with one h1;
// a conversation is started, answered and renamed from the keyboard alone.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';

import { BASE, launch, sendMessage, signUp, uniqueEmail } from './helpers.js';

const AXE = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** axe-core's violations on the page as it is, one line each (the DevTools protocol runs the
 * script, which the page's CSP would refuse to load). */
async function violations(page) {
  await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  return found;
}

async function check(page, screen) {
  assert.deepEqual(await violations(page), [], `${screen}: axe-core`);
  assert.equal(await page.locator('h1:visible').count(), 1, `${screen}: one h1`);
}

test('every screen passes axe-core and has its h1', async () => {
  const page = await browser.page();
  await page.goto(`${BASE}/signin`);
  await page.locator('#view-signin').waitFor();
  await check(page, 'sign-in');
  await page.goto(`${BASE}/signup`);
  await page.locator('#view-signup').waitFor();
  await check(page, 'sign-up');
  // The consent screen comes up after sign-up: the helper answers it, so it is checked first.
  await page.fill('#signup-form input[name=email]', uniqueEmail('a11y'));
  await page.fill('#signup-form input[name=password]', 'correct horse battery');
  await page.click('#signup-form button[type=submit]');
  await page.waitForURL(`${BASE}/welcome`);
  await check(page, 'consent');
  await page.check('#profile-form input[name=keep_history]');
  await page.click('#profile-submit');
  await page.waitForURL(/\/chat/);
  await page.locator('#view-chat').waitFor();
  await check(page, 'chat, empty');
  const item = await sendMessage(page, 'A list:\n\n- **one**\n- `two`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```');
  await item.locator('.answer pre').waitFor();
  await check(page, 'chat, an answer in Markdown');
  await page.click('#rename-conversation');
  await check(page, 'chat, renaming');
  // The check can fail: a button without a name is found.
  await page.evaluate(() => document.querySelector('#messages').append(document.createElement('button')));
  assert.ok((await violations(page)).some((v) => v.startsWith('button-name')), 'axe-core finds a nameless button');
  await page.evaluate(() => document.querySelector('#messages > button').remove());
  await page.goto(`${BASE}/settings`);
  await page.locator('#view-profile').waitFor();
  await check(page, 'settings');
  await page.close();
});

test('a conversation from the keyboard alone: write, send, read, rename', async () => {
  const page = await browser.page();
  await signUp(page, BASE, uniqueEmail('keys'));
  await page.locator('#prompt').focus();
  await page.keyboard.type('Typed, not clicked');
  await page.keyboard.press('Enter');
  await page.locator('#messages .answer').getByText('echo: Typed, not clicked').waitFor();
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'Typed, not clicked');
  // From the message box back to Rename, by Shift+Tab alone.
  for (let i = 0; i < 20 && (await page.evaluate(() => document.activeElement.id)) !== 'rename-conversation'; i++) {
    await page.keyboard.press('Shift+Tab');
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), 'rename-conversation');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('From the keyboard');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'From the keyboard');
  await page.close();
});
