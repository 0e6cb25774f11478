// Drives one headless Chromium page for the browser tests
// (tests/api/browser.rs), which send it one JSON command per line on stdin
// and read one JSON answer per line on stdout:
//
//   {"open": "<origin>", "html": "<page>"}  serve the page at <origin>/test.html
//                                           (with /vendor/* from node_modules) and load it
//   {"goto": "<url>"}                        load a page the server serves itself
//   {"eval": "<expression>"}                 its value (awaited), as JSON
//   {"wait": "<expression>", "timeout": ms}  until the expression is truthy
//   {"offline": true|false}                  cut the pages off the network, or not
//   {"newPage": true}                        open another page (a tab) of the same
//                                            browser context; its index is the answer
//   {"closePage": n}                         close page n (as a user closes a tab)
//   {"reload": true}                         reload the page
//
// Every command acts on page 0, or on page n when it carries "page": n.
//
// Answers: {"ok": value} or {"error": "..."}.
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = fileURLToPath(new URL('.', import.meta.url));
const vendor = {
  '/vendor/react.js': 'node_modules/react/umd/react.development.js',
  '/vendor/react-dom.js': 'node_modules/react-dom/umd/react-dom.development.js',
  '/vendor/vue.js': 'node_modules/vue/dist/vue.esm-browser.js',
};

// A profile on disk, as a user's browser has: IndexedDB outlives a page
// (an incognito context may drop an origin's data once no page holds it).
// The test gives its directory (and removes it); run by hand, a new one.
const profile = process.env.LIVEHUB_BROWSER_PROFILE || mkdtempSync(join(tmpdir(), 'livehub-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.LIVEHUB_CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // A page left is gone, as after a reload: none kept frozen with its
    // IndexedDB connections and timers.
    '--disable-features=BackForwardCache',
  ],
});
const log = [];
const pages = [];
async function newPage(page) {
  page = page || await context.newPage();
  const index = pages.length;
  page.on('console', (message) => log.push(`${index} ${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.push(`${index} pageerror: ${error.message} ${error.stack}`));
  pages.push(page);
  return index;
}
await newPage(context.pages()[0]);

async function run(command) {
  const page = pages[command.page || 0];
  if (!page) throw new Error(`no page ${command.page}`);
  if (command.newPage !== undefined) return newPage();
  if (command.closePage !== undefined) {
    await pages[command.closePage].close({ runBeforeUnload: true });
    return null;
  }
  if (command.reload !== undefined) {
    await page.reload();
    return null;
  }
  if (command.open !== undefined) {
    const origin = command.open;
    await page.route(`${origin}/test.html`, (route) =>
      route.fulfill({ contentType: 'text/html', body: command.html }));
    for (const [path, file] of Object.entries(vendor)) {
      await page.route(`${origin}${path}`, (route) =>
        route.fulfill({ contentType: 'text/javascript', body: readFileSync(here + file, 'utf8') }));
    }
    await page.goto(`${origin}/test.html`);
    return null;
  }
  if (command.goto !== undefined) {
    await page.goto(command.goto);
    return null;
  }
  if (command.eval !== undefined) return page.evaluate(command.eval);
  if (command.wait !== undefined) {
    try {
      await page.waitForFunction(command.wait, null, { timeout: command.timeout || 20000, polling: 50 });
    } catch (error) {
      if (command.soft) return 'timeout';
      throw error;
    }
    return true;
  }
  if (command.offline !== undefined) {
    await context.setOffline(command.offline);
    return null;
  }
  if (command.log !== undefined) return log;
  throw new Error(`unknown command ${JSON.stringify(command)}`);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    answer = { ok: (await run(JSON.parse(line))) ?? null };
  } catch (error) {
    answer = { error: String(error && error.message ? error.message : error), log: log.slice(-20) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await context.close();
if (!process.env.LIVEHUB_BROWSER_PROFILE) rmSync(profile, { recursive: true, force: true });
