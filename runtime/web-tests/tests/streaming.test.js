// Answers that stream as the model writes them: the first words before the model has finished,
// a reload mid-answer that resumes it, and Stop, which ends the model's call and keeps what was
// written, marked stopped.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launch, sendMessage, signUp, startFakeLlm, startServer, uniqueEmail } from './helpers.js';

const WORDS = 40;
const words = (n) => Array.from({ length: n }, (_, i) => `word${i + 1}`).join(' ');

let browser;
let llm;
let server;
before(async () => {
  browser = await launch();
  // Forty words, one each 150 ms: six seconds of writing.
  llm = await startFakeLlm(() => 200, 0, { answer: () => `${words(WORDS)}.`, everyMs: 150 });
  const env = { AIRA_LLM_BASE_URL: llm.baseUrl, AIRA_LLM_API_KEY: 'sk-test', AIRA_STREAM_FLUSH_MS: '200' };
  server = await startServer({ env });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await llm?.close();
});

/** The words the answer of `item` shows. */
const shown = async (item) => ((await item.locator('.answer').textContent()) ?? '').match(/word\d+/g) ?? [];

test('the first words appear while the model is still writing, and a reload resumes the answer', async () => {
  const page = await browser.page();
  await signUp(page, server.url, uniqueEmail('stream'));
  const item = await sendMessage(page, 'tell me at length');
  await item.locator('.answer').getByText('word2', { exact: false }).waitFor({ timeout: 10000 });
  assert.equal(await item.getAttribute('data-status'), 'processing', 'words shown before the answer is done');
  assert.equal(await item.locator('.status').textContent(), 'Writing…');
  const early = await shown(item);
  assert.ok(early.length < WORDS, `${early.length} words shown early`);
  assert.deepEqual(early, early.map((_, i) => `word${i + 1}`), 'in order, none twice');

  // Reloaded mid-answer: the partial answer at once, then the rest, once each.
  await page.waitForFunction(() => /word8/.test(document.querySelector('#messages .answer')?.textContent ?? ''));
  await page.reload();
  const again = page.locator('#messages > li').first();
  await again.locator('.answer').getByText('word8', { exact: false }).waitFor({ timeout: 5000 });
  assert.equal(await again.getAttribute('data-status'), 'processing', 'resumed while the model still writes');
  await again.locator('.answer').getByText(`word${WORDS}.`).waitFor({ timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('#messages > li').dataset.status === 'answered');
  assert.deepEqual(await shown(again), words(WORDS).split(' '));
  assert.equal(await again.getByRole('button', { name: 'Stop' }).count(), 0, 'no Stop once answered');
  await page.close();
});

test('Stop ends the model call and keeps the words written, marked stopped', async () => {
  const page = await browser.page();
  await signUp(page, server.url, uniqueEmail('stop'));
  const cutBefore = llm.cut();
  const item = await sendMessage(page, 'go on and on');
  await item.locator('.answer').getByText('word3', { exact: false }).waitFor({ timeout: 10000 });
  const stopped = page.waitForResponse((r) => r.url().endsWith('/stop') && r.request().method() === 'POST');
  await item.getByRole('button', { name: 'Stop this answer' }).click();
  assert.equal((await stopped).status(), 202);
  // Said at once, and kept until the answer ends (no "Writing…" in between).
  await page.waitForFunction(() => {
    const label = document.querySelector('#messages > li .status').textContent;
    return label === 'Stopping…' || label === 'Stopped';
  });
  await page.waitForFunction(() => document.querySelector('#messages > li').dataset.status === 'answered', null, { timeout: 5000 });
  assert.equal(await item.locator('.status').textContent(), 'Stopped');
  const kept = await shown(item);
  assert.ok(kept.length >= 3 && kept.length < WORDS, `${kept.length} words kept`);
  // The model's stream was closed by the worker, not written to its end.
  const deadline = Date.now() + 3000;
  while (llm.cut() === cutBefore && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(llm.cut(), cutBefore + 1, 'the model call ended');
  // No more words arrive, and after a reload the same words, still marked stopped.
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(await shown(item), kept);
  await page.reload();
  const reloaded = page.locator('#messages > li').first();
  await reloaded.locator('.status').getByText('Stopped').waitFor();
  assert.deepEqual(await shown(reloaded), kept);
  // Regenerate gives a whole answer in its place.
  await reloaded.getByRole('button', { name: 'Regenerate' }).click();
  await reloaded.locator('.answer').getByText(`word${WORDS}.`).waitFor({ timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('#messages > li').dataset.status === 'answered');
  assert.equal(await reloaded.locator('.status').textContent(), 'Answered');
  await page.close();
});
