// Conversations are named by their first message, renamed and deleted from the chat screen, by
// mouse or keyboard; the chat screen has its h1.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BASE, launch, sendMessage, signUp, uniqueEmail } from './helpers.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the first message names a conversation; it can be renamed and deleted', async () => {
  const page = await browser.page();
  await signUp(page, BASE, uniqueEmail('titles'));
  assert.equal(await page.locator('h1:visible').textContent(), 'New conversation');
  const item = await sendMessage(page, 'Which trams run to Belém on Sundays?');
  await item.locator('.answer').waitFor();
  const heading = page.locator('#chat-title');
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'Which trams run to Belém on Sundays?');
  const list = page.locator('#conversation-list a');
  assert.equal(await list.first().textContent(), 'Which trams run to Belém on Sundays?');
  const id = new URL(page.url()).pathname.split('/').pop();

  // Rename with the keyboard: the button, the field, Enter.
  await page.locator('#rename-conversation').focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'title-input');
  assert.equal(await page.inputValue('#title-input'), 'Which trams run to Belém on Sundays?');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('Belém trams');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'Belém trams');
  // The list is read again after the heading changed.
  await page.waitForFunction(() => document.querySelector('#conversation-list a')?.textContent === 'Belém trams');
  assert.ok(await page.locator('#rename-form').isHidden());
  // Escape leaves a rename unchanged.
  await page.click('#rename-conversation');
  await page.fill('#title-input', 'Not this');
  await page.keyboard.press('Escape');
  assert.ok(await page.locator('#rename-form').isHidden());
  assert.equal(await heading.textContent(), 'Belém trams');
  // An empty title is refused, said in the page.
  await page.click('#rename-conversation');
  await page.fill('#title-input', '   ');
  await page.click('#rename-form button[type=submit]');
  await page.locator('#title-error').waitFor();
  await page.keyboard.press('Escape');

  // After a reload, the same title.
  await page.reload();
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'Belém trams');

  // Delete, confirmed: gone from the list and from the server.
  page.once('dialog', (d) => d.accept());
  await page.click('#delete-conversation');
  await page.waitForURL(`${BASE}/chat/new`);
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'New conversation');
  // The list, read again, no longer has it.
  await page.waitForFunction(() => document.querySelectorAll('#conversation-list a').length === 0);
  const status = await page.evaluate(async (id) => (await fetch(`/v1/conversations/${id}`)).status, id);
  assert.equal(status, 404);
  await page.close();
});

test('a conversation deleted by mistake is not: dismissing the question keeps it', async () => {
  const page = await browser.page();
  await signUp(page, BASE, uniqueEmail('keep'));
  await (await sendMessage(page, 'Keep me')).locator('.answer').waitFor();
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === 'Keep me');
  page.once('dialog', (d) => d.dismiss());
  await page.click('#delete-conversation');
  await page.waitForTimeout(300);
  assert.equal(await page.locator('#conversation-list a').count(), 1);
  assert.equal(await page.locator('#chat-title').textContent(), 'Keep me');
  await page.close();
});
