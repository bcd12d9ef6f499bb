// What the drivers share: headless Chromium on a JupyterLab notebook in the
// pmp kernel, cells found by their source, a failure that leaves a
// screenshot, and the steps at which the test (test_*.py) acts in between.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.PMP_CHROMIUM || "/usr/bin/chromium";
export const KERNEL = "Python 3 (pmp)";
const STEP_TIMEOUT_MS = 60_000;

export const log = (message) => console.log(`${process.argv[1].split("/").pop()}: ${message}`);
export const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

export class LabPage {
  /** Chromium with one page; `openNotebook` then loads the notebook. */
  static async launch() {
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
    const lab = new LabPage(browser, page);
    page.on("console", (message) => {
      if (message.type() === "error") lab.consoleErrors.push(message.text());
    });
    return lab;
  }

  constructor(browser, page) {
    this.browser = browser;
    this.page = page;
    this.consoleErrors = [];
    this.started = Date.now();
    this.notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)");
    this.stdin = null;
    this.answers = null;
    this.executions = 0; // the kernel's execution count: cells run only here
  }

  async openNotebook(url) {
    const page = this.page;
    await page.goto(url);
    await this.notebook.locator(".jp-Cell").first().waitFor();
    log(`notebook open after ${seconds(this.started)}`);
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
    await this.idle();
    log(`kernel "${KERNEL}" idle after ${seconds(this.started)}`);
  }

  idle() {
    return this.page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').waitFor();
  }

  /** The code cell whose source contains `text`. */
  codeCell(text) {
    return this.notebook
      .locator(".jp-CodeCell")
      .filter({ has: this.page.locator(".jp-InputArea", { hasText: text }) });
  }

  /** The status display of `cell` once it is in `state` (and has `text`). */
  display(cell, state, text) {
    const found = cell.locator(`.jp-OutputArea-output .pmp-status[data-state="${state}"]`);
    return text === undefined ? found : found.filter({ hasText: text });
  }

  /** Select `cell` (a click on its prompt: command mode) and run it in
   * place, as Ctrl+Enter does; waits until its prompt shows the execution
   * number the kernel gives it (the next one: cells are run only here). */
  async run(cell) {
    await this.start(cell);
    await cell.locator(".jp-InputPrompt", { hasText: `[${this.executions}]` }).waitFor();
  }

  /** Run `cell` as `run` does, without waiting for it to end (a cell that
   * stops at a breakpoint ends only when the debugger lets it go on). */
  async start(cell) {
    await cell.locator(".jp-InputPrompt").click();
    await this.page.keyboard.press("Control+Enter");
    this.executions += 1;
  }

  /** Wait until the toolbar button `button` is enabled (JupyterLab greys out,
   * as `disabled`, what the kernel does not support); `what` names it in
   * the error, with the tooltip that says why it is disabled. */
  async waitEnabled(button, what) {
    const enabled = this.page.locator(':not([disabled]):not([aria-disabled="true"])');
    try {
      await button.and(enabled).waitFor();
    } catch (error) {
      const title = await button.getAttribute("title");
      throw new Error(`${what} stayed disabled (its tooltip: ${JSON.stringify(title)}): ${error}`);
    }
  }

  /** Click the breakpoint gutter of `cell` beside its line `line` (1-based):
   * the gutter's column at the height of the line, as a user aims it. */
  async clickGutter(cell, line) {
    const gutter = cell.locator(".cm-gutter.cm-breakpoint-gutter");
    await gutter.waitFor();
    const row = await cell.locator(".cm-content .cm-line").nth(line - 1).boundingBox();
    const column = await gutter.boundingBox();
    await this.page.mouse.click(column.x + column.width / 2, row.y + row.height / 2);
  }

  /** Kernel > Restart Kernel…, the dialog accepted: outputs stay, the
   * execution count starts again. */
  async restartKernel() {
    await this.menu("Kernel", /^Restart Kernel(…|\.\.\.)?$/);
    const dialog = this.page.locator(".jp-Dialog");
    await dialog.waitFor();
    log(`a dialog asks: ${(await dialog.innerText()).replace(/\s+/g, " ")}`);
    await dialog.locator("button.jp-mod-accept").click();
    await dialog.waitFor({ state: "detached" });
    this.executions = 0;
  }

  /** Pick `item` of the menu `menu` in the menu bar. */
  async menu(menu, item) {
    await this.page.locator(".lm-MenuBar-itemLabel", { hasText: new RegExp(`^${menu}$`) }).click();
    await this.page.locator(".lm-Menu-itemLabel", { hasText: item }).click();
  }

  /** A screenshot of the page with `element` at the top (or centre). */
  async screenshot(path, element, block = "start") {
    await element.evaluate((node, where) => node.scrollIntoView({ block: where }), block);
    await this.page.mouse.move(0, 0);
    await this.page.waitForTimeout(300); // the scroll settles
    await this.page.screenshot({ path });
    log(`screenshot: ${path}`);
  }

  /** Tell the test the story reached `name` (with `data`), then wait for its
   * answer: the JSON it sends on stdin, or "stop" (it failed: end here). */
  async step(name, data = {}) {
    this.stdin ??= createInterface({ input: process.stdin });
    this.answers ??= this.stdin[Symbol.asyncIterator]();
    console.log(`step ${name} ${JSON.stringify(data)}`);
    const { value, done } = await this.answers.next();
    if (done || value === "stop") throw new Error(`the test stopped the story at ${name}`);
    return JSON.parse(value);
  }

  /** Say what went wrong, with the notebook's outputs, leave a screenshot
   * of the page as it is at `screenshot`, and exit 1. */
  async fail(message, screenshot) {
    console.error(`FAILED: ${message}`);
    try {
      const outputs = await this.page.locator(".jp-OutputArea-output").allInnerTexts();
      console.error(`cell outputs:\n${outputs.map((o) => `  | ${o}`).join("\n")}`);
      if (this.consoleErrors.length) {
        console.error(`browser console errors:\n  ${this.consoleErrors.slice(-10).join("\n  ")}`);
      }
      await this.page.screenshot({ path: screenshot });
      console.error(`screenshot of the failure: ${screenshot}`);
    } catch (error) {
      console.error(`no screenshot: ${error}`);
    }
    await this.browser.close();
    process.exit(1);
  }

  async close() {
    this.stdin?.close(); // an open stdin would keep node running
    await this.browser.close();
    log(`passed in ${seconds(this.started)}`);
  }
}
