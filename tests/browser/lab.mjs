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

import { LabPage, log, seconds } from "./lab_page.mjs";

const [url, screenshot, cropped] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node lab.mjs NOTEBOOK_URL SCREENSHOT.png [CROPPED.png]");
  process.exit(2);
}
const DONE_TIMEOUT_MS = 90_000;
// The cell's last expression is `offset + 22, os.getpid()`.
const RESULT = /: \(42, \d+\)$/m; // the display may list printed lines below
const DONE_GREEN = "rgb(43, 138, 62)"; // state_style.COLOURS["done"]

const lab = await LabPage.launch();
const { page, notebook } = lab;

async function fail(message) {
  const cell = lab.codeCell("%%pmp submit");
  if ((await cell.count()) === 1) {
    await cell.evaluate((element) => element.scrollIntoView({ block: "center" }));
  }
  await lab.fail(message, screenshot);
}

try {
  await lab.openNotebook(url);

  // Run > Run All Cells (the %%pmp cell uses `offset` from the cell before it).
  await lab.menu("Run", /^Run All Cells$/);
  const ran = Date.now();
  log("Run All Cells");

  // The display of the %%pmp cell (other cells may have status displays too)
  // ends in one of done, failed, cancelled.
  const pmpCell = lab.codeCell("%%pmp submit");
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
  log(`display after ${seconds(ran)}: ${text}`);
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
  await lab.screenshot(screenshot, intro);
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
  await lab.close();
} catch (error) {
  await fail(String(error && error.stack ? error.stack : error));
}
