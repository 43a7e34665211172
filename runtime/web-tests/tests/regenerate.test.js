// Regenerate: the last answer only, asked again and replaced in place.
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

test('the last answer can be generated again, and only the last', async () => {
  const page = await browser.page();
  await signUp(page, BASE, uniqueEmail('regen'));
  const first = await sendMessage(page, 'first question');
  await first.locator('.answer').getByText('echo: first question').waitFor();
  await first.getByRole('button', { name: 'Regenerate' }).waitFor();
  const second = await sendMessage(page, 'second question');
  await second.locator('.answer').getByText('echo: second question').waitFor();
  await second.getByRole('button', { name: 'Regenerate' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Regenerate' }).count(), 1, 'on the last message only');

  const asked = page.waitForResponse((r) => r.url().endsWith('/regenerate') && r.request().method() === 'POST');
  await second.getByRole('button', { name: 'Regenerate' }).click();
  assert.equal((await asked).status(), 202);
  await second.locator('.answer').getByText('echo: second question').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#messages > li')[1].dataset.status === 'answered');
  assert.equal(await page.locator('#messages > li').count(), 2, 'the same message, answered again');
  // After a reload, one answer to it.
  await page.reload();
  await page.locator('#messages > li').nth(1).locator('.answer').getByText('echo: second question').waitFor();
  assert.equal(await page.locator('#messages > li').nth(1).locator('.answer p').count(), 1);
  await page.close();
});
