// The deployed stack's chat in Chromium, for scripts/deployed: through the harness's load
// balancer (HTTPS, its certificate from a local CA, trusted here by its public key), the site's
// name resolved to loopback. Signs up, consents, sends a message and waits for the answer,
// which the model (llm-katan) gave to a worker task. Prints `answered: TEXT`.
import { launch, sendMessage, signUp, uniqueEmail } from './tests/helpers.js';

const base = process.env.AIRA_DEPLOYED_URL;
const browser = await launch([
  `--host-resolver-rules=${process.env.AIRA_DEPLOYED_RESOLVE}`,
  `--ignore-certificate-errors-spki-list=${process.env.AIRA_DEPLOYED_SPKI}`,
]);
try {
  const page = await browser.page();
  await signUp(page, base, uniqueEmail('deployed'));
  const item = await sendMessage(page, 'hello from the deployed harness');
  await page.waitForFunction((el) => el.dataset.status === 'answered', await item.elementHandle(), { timeout: 60000 });
  const answer = (await item.locator('.answer').textContent()).trim();
  if (!answer.includes('hello from the deployed harness')) {
    throw new Error(`the answer does not echo the message: ${answer}`);
  }
  console.log(`answered: ${answer}`);
} finally {
  await browser.close();
}
