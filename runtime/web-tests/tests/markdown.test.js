// Answers render as Markdown (the echo model repeats the prompt): headings, emphasis, lists,
// tables, links that open safely, code blocks with a copy button; raw HTML, `javascript:`
// links and images stay inert.
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

const ANSWER = [
  'Here:',
  '',
  '## A heading',
  '',
  'Some **bold**, *emphasis* and ~~struck~~ text with `a <b>code</b> span`.',
  '',
  '- one',
  '- two',
  '',
  '3. third',
  '4. fourth',
  '',
  '| name | n |',
  '|:-----|--:|',
  '| a    | 1 |',
  '',
  '[safe](https://example.com/x) and [evil](javascript:window.pwned=1) and ![pic](https://example.com/p.png)',
  '',
  '<img src=x onerror="window.pwned = 2; alert(2)">',
  '',
  '> quoted',
  '',
  '```rust',
  'fn main() { println!("<script>"); }',
  '```',
].join('\n');

test('an answer renders as Markdown, and what could run stays inert', async () => {
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const page = await browser.page();
  const { dialogs, violations } = watch(page);
  await signUp(page, BASE, uniqueEmail('md'));
  const item = await sendMessage(page, ANSWER);
  const answer = item.locator('.answer');
  await answer.locator('pre').waitFor();

  // The answer's heading sits below the page's h1 and h2.
  assert.equal(await answer.locator('h4').textContent(), 'A heading');
  assert.equal(await answer.locator('strong').textContent(), 'bold');
  assert.equal(await answer.locator('em').textContent(), 'emphasis');
  assert.equal(await answer.locator('s').textContent(), 'struck');
  assert.equal(await answer.locator('p code').textContent(), 'a <b>code</b> span');
  assert.deepEqual(await answer.locator('ul > li').allTextContents(), ['one', 'two']);
  assert.deepEqual(await answer.locator('ol > li').allTextContents(), ['third', 'fourth']);
  assert.equal(await answer.locator('ol').getAttribute('start'), '3');
  assert.deepEqual(await answer.locator('th').allTextContents(), ['name', 'n']);
  assert.equal(await answer.locator('td.align-right').textContent(), '1');
  assert.equal(await answer.locator('blockquote').textContent(), 'quoted');

  // Links: http(s) only, opened without a referrer or a handle on this page.
  const links = answer.locator('a');
  const hrefs = await links.evaluateAll((as) => as.map((a) => [a.href, a.rel, a.target, a.textContent]));
  assert.deepEqual(hrefs, [
    ['https://example.com/x', 'noopener noreferrer', '_blank', 'safe'],
    ['https://example.com/p.png', 'noopener noreferrer', '_blank', 'pic'],
  ]);
  assert.ok((await answer.textContent()).includes('evil'), 'a javascript: link shows as its words');
  // No element came from HTML in the answer; the raw tag shows as text.
  const html = await answer.evaluate((a) => a.querySelectorAll('img, script, b, iframe, svg').length);
  assert.equal(html, 0);
  assert.ok((await answer.textContent()).includes('<img src=x onerror="window.pwned = 2; alert(2)">'));

  // The code block, its language, and its copy button.
  const code = answer.locator('pre code');
  assert.equal(await code.getAttribute('data-lang'), 'rust');
  assert.equal(await code.textContent(), 'fn main() { println!("<script>"); }');
  const copy = answer.getByRole('button', { name: 'Copy the rust code' });
  await copy.click();
  await answer.getByRole('button', { name: 'Copy the rust code' }).filter({ hasText: 'Copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'fn main() { println!("<script>"); }');

  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, []);
  assert.equal(await page.evaluate(() => window.pwned), undefined);

  // The same after a reload, rendered from the store.
  await page.reload();
  await page.locator('#messages .answer h4').waitFor();
  assert.equal(await page.locator('#messages .answer a').count(), 2);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.deepEqual(violations, [], 'the page needs nothing its CSP forbids');
  await page.close();
});

test('an answer cut off inside a code fence renders as far as it goes', async () => {
  const page = await browser.page();
  await signUp(page, BASE, uniqueEmail('md-open'));
  const item = await sendMessage(page, 'Start:\n\n```\nline one\nline two');
  const code = item.locator('.answer pre code');
  await code.waitFor();
  assert.equal(await code.textContent(), 'line one\nline two');
  await page.close();
});
