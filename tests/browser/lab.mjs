// Drives JupyterLab in headless Chromium: opens the quickstart notebook, runs
// all its cells in the pmp kernel and waits until the `%%pmp submit` cell's
// live status display says done with the result.
//
//   node lab.mjs NOTEBOOK_URL SCREENSHOT.png [CROPPED.png]
//
// NOTEBOOK_URL is /lab/tree/<notebook>?token=... of a running JupyterLab.
// SCREENSHOT.png is the page at the end, also on failure; CROPPED.png, if
// given, only the cells from the `%%pmp` introduction to the last one.
// Exits 0 on success, 1 with a message on stderr otherwise.

import { chromium } from "playwright-core";

const [url, screenshot, cropped] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node lab.mjs NOTEBOOK_URL SCREENSHOT.png [CROPPED.png]");
  process.exit(2);
}
const CHROMIUM = process.env.PMP_CHROMIUM || "/usr/bin/chromium";
const KERNEL = "Python 3 (pmp)";
const DONE_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 60_000;
// The cell's last expression is `offset + 22, os.getpid()`.
const RESULT = /: \(42, \d+\)$/m; // the display may list printed lines below
const DONE_GREEN = "rgb(43, 138, 62)"; // state_style.COLOURS["done"]

const log = (message) => console.log(`lab.mjs: ${message}`);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
page.setDefaultTimeout(STEP_TIMEOUT_MS);
const consoleErrors = [];
page.on("console", (message) => {
  if (message.type() === "error") consoleErrors.push(message.text());
});

async function fail(message) {
  console.error(`lab.mjs: FAILED: ${message}`);
  try {
    const cell = page.locator(".jp-CodeCell", { hasText: "%%pmp submit" });
    if ((await cell.count()) === 1) {
      await cell.evaluate((element) => element.scrollIntoView({ block: "center" }));
    }
    const outputs = await page.locator(".jp-OutputArea-output").allInnerTexts();
    console.error(`cell outputs:\n${outputs.map((o) => `  | ${o}`).join("\n")}`);
    if (consoleErrors.length) {
      console.error(`browser console errors:\n  ${consoleErrors.slice(-10).join("\n  ")}`);
    }
    await page.screenshot({ path: screenshot });
    console.error(`lab.mjs: screenshot of the failure: ${screenshot}`);
  } catch (error) {
    console.error(`lab.mjs: no screenshot: ${error}`);
  }
  await browser.close();
  process.exit(1);
}

try {
  const started = Date.now();
  await page.goto(url);
  const notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)");
  await notebook.locator(".jp-Cell").first().waitFor();
  log(`notebook open after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // The notebook names the pmp kernel; a kernel selection dialog means it
  // was not found, in which case pick it explicitly.
  const dialog = page.locator(".jp-Dialog");
  const kernelName = page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName");
  await Promise.race([dialog.waitFor(), kernelName.filter({ hasText: KERNEL }).waitFor()]);
  if (await dialog.isVisible()) {
    log(`a dialog asks: ${(await dialog.innerText()).replace(/\s+/g, " ")}`);
    await dialog.locator("select").selectOption({ label: KERNEL });
    await dialog.locator("button.jp-mod-accept").click();
  }
  await kernelName.filter({ hasText: KERNEL }).waitFor();
  await page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').waitFor();
  log(`kernel "${KERNEL}" idle after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // Run > Run All Cells (the %%pmp cell uses `offset` from the cell before it).
  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();
  const ran = Date.now();
  log("Run All Cells");

  // The display of the %%pmp cell (other cells may have status displays too)
  // ends in one of done, failed, cancelled.
  const pmpCell = notebook
    .locator(".jp-CodeCell")
    .filter({ has: page.locator(".jp-InputArea", { hasText: "%%pmp submit" }) });
  const display = pmpCell.locator(".jp-OutputArea-output .pmp-status");
  const finished = ["done", "failed", "cancelled"].map((s) => `[data-state="${s}"]`);
  try {
    await display.and(page.locator(finished.join(", "))).waitFor({ timeout: DONE_TIMEOUT_MS });
  } catch {
    const states = await notebook.locator(".pmp-status").allInnerTexts();
    await fail(
      `the %%pmp cell's display did not finish within ${DONE_TIMEOUT_MS / 1000} s ` +
        `(status displays: ${JSON.stringify(states)})`,
    );
  }
  const state = await display.getAttribute("data-state");
  const text = (await display.innerText()).trim();
  log(`display after ${((Date.now() - ran) / 1000).toFixed(1)} s: ${text}`);
  if (state !== "done" || !text.startsWith("answer done") || !RESULT.test(text)) {
    await fail(`the display is not done with the result ${RESULT}: ${JSON.stringify(text)}`);
  }

  // As the browser draws it (JupyterLab's sanitizer keeps inline styles and
  // tooltips): the state is a badge in its colour, its tooltip says what the
  // state means.
  if ((await display.locator(".pmp-badge").count()) === 0) {
    await fail("the display shows its state without a badge (.pmp-badge)");
  }
  const badge = await display
    .locator(".pmp-badge")
    .first()
    .evaluate((e) => ({
      text: e.innerText,
      title: e.title,
      colour: getComputedStyle(e).backgroundColor,
    }));
  if (badge.text !== "done" || badge.colour !== DONE_GREEN || !badge.title.startsWith("ended")) {
    await fail(`the badge is not a green "done" with its meaning: ${JSON.stringify(badge)}`);
  }
  // The map cell's progress display: done, its bar one green segment as wide as the bar.
  const progress = notebook.locator('.pmp-progress[data-state="done"]');
  if ((await progress.count()) !== 1) {
    await fail(`not one finished map progress display: ${await progress.count()}`);
  }
  if ((await progress.locator(".pmp-bar").count()) !== 1) {
    await fail("the map's progress display has no bar (.pmp-bar)");
  }
  const bar = await progress.locator(".pmp-bar").evaluate((e) => ({
    width: e.clientWidth,
    done: e.querySelector('[data-bar-state="done"]')?.offsetWidth,
    colour: getComputedStyle(e.querySelector('[data-bar-state="done"]')).backgroundColor,
  }));
  if (!(bar.width > 50 && bar.done === bar.width && bar.colour === DONE_GREEN)) {
    await fail(`the map's bar is not all green: ${JSON.stringify(bar)}`);
  }

  // The last cell reads the Future bound by --name and prints "42 True".
  const last = notebook.locator(".jp-Cell").last();
  await last.locator(".jp-InputPrompt", { hasText: /\[\d+\]/ }).waitFor();
  const printed = (await last.locator(".jp-OutputArea-output").allInnerTexts()).join("").trim();
  if (printed !== "42 True") {
    await fail(`the last cell printed ${JSON.stringify(printed)}, not "42 True"`);
  }
  const errors = await notebook.locator('.jp-OutputArea-output[data-mime-type*="error"]').count();
  if (errors) await fail(`${errors} cell(s) raised an error`);

  // Scroll the %%pmp part of the notebook into view and take the pictures.
  const cells = notebook.locator(".jp-Cell");
  const intro = notebook.locator(".jp-MarkdownCell", { hasText: "%%pmp submit" }).last();
  await intro.evaluate((element) => element.scrollIntoView({ block: "start" }));
  await page.mouse.move(0, 0);
  await page.waitForTimeout(300);
  await page.screenshot({ path: screenshot });
  log(`screenshot: ${screenshot}`);
  if (cropped) {
    const first = await intro.boundingBox();
    const end = await cells.last().boundingBox();
    const clip = {
      x: Math.max(0, first.x - 8),
      y: Math.max(0, first.y - 8),
      width: first.width + 16,
      height: end.y + end.height - first.y + 16,
    };
    await page.screenshot({ path: cropped, clip });
    log(`cropped screenshot: ${cropped}`);
  }
  await browser.close();
  log(`passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  await fail(String(error && error.stack ? error.stack : error));
}
