// Regenerates docs/screenshot.png (used by scripts/screenshot): the demo page at 1280×800 a
// couple of seconds after the first pushed renewal, started the way a new user starts it.
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { DemoServer } from './demo-server.mjs';

const out = resolve(process.argv[2] || resolve(import.meta.dirname, '../../docs/screenshot.png'));
const server = new DemoServer();
await server.start();
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars'] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  await page.goto(server.url + '/');
  await page.fill('#username', 'alice');
  await page.fill('#password', server.passwords.alice);
  await page.click('#login-form button[type=submit]');
  console.log('signed in; waiting for the first pushed renewal (under a minute)…');
  await page.waitForFunction(() => window.timeline.tokens.some((t) => t.how === 'push'), null, { timeout: 90000, polling: 250 });
  await page.waitForTimeout(2500);
  mkdirSync(resolve(out, '..'), { recursive: true });
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.stop();
}
