// Shared helpers of the browser tests: the browser, extra servers, sign-up.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export const BASE = process.env.AIRA_WEB_URL ?? 'http://127.0.0.1:8080';
export const ARTIFACTS = process.env.AIRA_ARTIFACTS ?? join(process.cwd(), '..', '..', 'tests', 'artifacts');
export const PASSWORD = 'correct horse battery';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Headless Debian chromium with a fresh profile folder, and `extraArgs`. `close()` removes it. */
export async function launch(extraArgs = []) {
  const dir = await mkdtemp(join(tmpdir(), 'aira-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1280, height: 800 },
  });
  context.setDefaultTimeout(15000);
  return {
    context,
    async page() {
      const page = await context.newPage();
      page.on('pageerror', (e) => console.error('page error:', e.message));
      return page;
    },
    async close() {
      await context.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Records what model output must never cause on `page`: dialogs (dismissed) and the
 * browser's Content-Security-Policy reports. */
export function watch(page) {
  const seen = { dialogs: [], violations: [] };
  page.on('dialog', async (d) => {
    seen.dialogs.push(d.message());
    await d.dismiss();
  });
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) {
      seen.violations.push(m.text());
    }
  });
  return seen;
}

export function uniqueEmail(tag) {
  return `${tag}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
}

/** Signs up through the page and answers the consent screen (keeping history unless
 * `keepHistory` is false); ends on the chat screen. */
export async function signUp(page, base, email, displayName = '', keepHistory = true) {
  await page.goto(`${base}/signup`);
  await page.fill('#signup-form input[name=email]', email);
  await page.fill('#signup-form input[name=password]', PASSWORD);
  await page.click('#signup-form button[type=submit]');
  await page.waitForURL(`${base}/welcome`);
  if (keepHistory) {
    await page.check('#profile-form input[name=keep_history]');
  }
  if (displayName) {
    await page.fill('#profile-form input[name=display_name]', displayName);
  }
  await page.click('#profile-submit');
  await page.waitForURL(/\/chat/);
  await page.locator('#view-chat').waitFor({ state: 'visible' });
}

/** Types and sends a message; returns its list item locator. */
export async function sendMessage(page, text) {
  const before = await page.locator('#messages > li').count();
  await page.fill('#prompt', text);
  await page.click('#send');
  const item = page.locator('#messages > li').nth(before);
  await item.waitFor();
  return item;
}

/**
 * Starts another `aira-runtime serve` with its own settings on `listen` (default a free
 * port) and data folder `data` (default a new temporary one, removed by `stop()`).
 * Returns { url, listen, data, stop(), kill() }.
 */
export async function startServer({ env = {}, listen = '127.0.0.1:0', data } = {}) {
  const bin = process.env.AIRA_RUNTIME_BIN;
  if (!bin) {
    throw new Error('AIRA_RUNTIME_BIN is not set (run the tests through runtime/web-tests/run.sh)');
  }
  const own = data === undefined;
  const dataDir = own ? await mkdtemp(join(tmpdir(), 'aira-serve-')) : data;
  const child = spawn(bin, ['serve', '--listen', listen, '--data', join(dataDir, 'data')], {
    env: { ...process.env, AIRA_LOG: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 30000);
    const onData = (chunk) => {
      output += chunk;
      const m = output.match(/"listen":"(127\.0\.0\.1:\d+)"/);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
  const exited = () => new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', r)));
  return {
    url,
    listen: url.slice('http://'.length),
    data: dataDir,
    /** Like a crash or a cut cable: no graceful shutdown. */
    async kill() {
      child.kill('SIGKILL');
      await exited();
    },
    async stop() {
      child.kill('SIGKILL');
      await exited();
      if (own) {
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * A fake OpenAI-compatible endpoint: `respond(n)` gives the status for the n-th call
 * (0-based); 200 answers `fake: PROMPT` (or `answer(prompt)`), whole or, when asked for a
 * stream (`stream: true`, as the runtime asks by default), in pieces `everyMs` apart, as
 * OpenAI streams. `cut()` counts the streams the client closed before their end.
 */
export async function startFakeLlm(respond, delayMs = 0, { answer = (p) => `fake: ${p}`, everyMs = 0 } = {}) {
  let calls = 0;
  let cut = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', async () => {
      const status = respond(calls++);
      await new Promise((r) => setTimeout(r, delayMs));
      const request = JSON.parse(body);
      const messages = request.messages ?? [];
      const text = answer(messages.length ? messages[messages.length - 1].content : '');
      if (status !== 200) {
        res.setHeader('Content-Type', 'application/json');
        res.writeHead(status);
        res.end(JSON.stringify({ error: { message: 'the model is down', code: null } }));
        return;
      }
      if (!request.stream) {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({
          id: 'chatcmpl-1',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }));
        return;
      }
      res.setHeader('Content-Type', 'text/event-stream');
      const chunk = (delta, finish = null) =>
        `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      let closed = false;
      res.on('close', () => {
        if (!res.writableEnded) {
          closed = true;
          cut += 1;
        }
      });
      const pieces = text.match(/\S+\s*|\s+/g) ?? [];
      for (const piece of pieces) {
        if (everyMs) {
          await new Promise((r) => setTimeout(r, everyMs));
        }
        if (closed) {
          return;
        }
        res.write(chunk({ content: piece }));
      }
      res.write(chunk({}, 'stop'));
      res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 1, completion_tokens: pieces.length } })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    calls: () => calls,
    cut: () => cut,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(r);
    }),
  };
}
