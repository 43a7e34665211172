// Model output (the echo model repeats the prompt) is shown as text and never executes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BASE, launch, sendMessage, signUp, uniqueEmail, watch } from './helpers.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('an answer with <script> and onerror is shown literally and never runs', async () => {
  const page = await browser.page();
  const { dialogs, violations } = watch(page);
  await signUp(page, BASE, uniqueEmail('xss'));

  const payload = [
    '<script>window.pwned = "script"; alert("script")</script>',
    '<img src=x onerror="window.pwned = \'img\'; alert(\'img\')">',
    '<svg onload="window.pwned = \'svg\'">',
    '```',
    '<iframe src="javascript:alert(1)"></iframe>',
    '```',
    '<b>bold?</b> `<i onmouseover=alert(1)>`',
  ].join('\n');
  const item = await sendMessage(page, payload);
  await item.locator('.answer').getByText('echo: <script>', { exact: false }).waitFor();

  // Give anything that might run a moment to do so.
  await page.waitForTimeout(500);
  const answerText = await item.locator('.answer').textContent();
  for (const literal of ['<script>window.pwned = "script"; alert("script")</script>', '<img src=x onerror=', '<iframe src="javascript:alert(1)"></iframe>', '<b>bold?</b>']) {
    assert.ok(answerText.includes(literal), `answer shows ${literal} literally: ${answerText}`);
  }
  assert.deepEqual(dialogs, [], 'no alert fired');
  assert.equal(await page.evaluate(() => window.pwned), undefined, 'no script ran');
  const injected = await page.evaluate(() => document.querySelectorAll('#messages script, #messages img, #messages svg, #messages iframe, #messages b, #messages i').length);
  assert.equal(injected, 0, 'no element came from the model output');
  // The fenced block became a <pre>, built from text.
  assert.equal(await item.locator('.answer pre').count(), 1);
  // The prompt, shown back to the user, is safe too.
  assert.ok((await item.locator('.prompt').textContent()).includes('<img src=x onerror='));
  // After a reload (rendered from the store) still nothing runs.
  await page.reload();
  await page.locator('#messages .answer pre').waitFor();
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, []);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.deepEqual(violations, [], 'the page itself needs nothing the CSP forbids');
  await page.close();
});
