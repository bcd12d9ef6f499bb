// Drives JupyterLab's debugger in headless Chromium on the pmp kernel: the
// bug icon of the notebook's toolbar is enabled and switched on, a click in
// the gutter of the function's cell sets a breakpoint, the cell runs and stops
// there (the call stack and the variables panel show the function's frame),
// Continue lets the cell finish.
//
//   node debugger.mjs NOTEBOOK_URL SCREENSHOT.png FAILED.png
//
// SCREENSHOT.png is the page while the cell is stopped at the breakpoint;
// FAILED.png the page as it was on failure. At the steps `stopped` and
// `finished` the test (test_debugger.py) reads what the page shows.
// Exits 0 on success, 1 with a message on stderr otherwise.

import { LabPage, log, seconds } from "./lab_page.mjs";

const [url, screenshot, failed] = process.argv.slice(2);
if (!url || !screenshot || !failed) {
  console.error("usage: node debugger.mjs NOTEBOOK_URL SCREENSHOT.png FAILED.png");
  process.exit(2);
}
// The cell's function, and the line of its body with the breakpoint (1-based,
// in the cell): by then every local variable of the function is bound.
const FUNCTION = "area";
const BREAKPOINT_LINE = 3;

const lab = await LabPage.launch();
const { page, notebook } = lab;
const texts = async (locator) => (await locator.allInnerTexts()).map((t) => t.trim());

try {
  await lab.openNotebook(url);
  const cell = lab.codeCell(`def ${FUNCTION}(`);

  // The bug icon: enabled, as it is for a kernel whose kernel_info_reply
  // offers the debugger (greyed out otherwise), and off.
  const bug = notebook.locator(".jp-NotebookPanel-toolbar .jp-DebuggerBugButton");
  await bug.waitFor();
  await lab.waitEnabled(bug, "the debugger toggle (bug icon)");
  log(`debugger toggle enabled, pressed=${await bug.getAttribute("aria-pressed")}`);
  await bug.click();
  // Pressed once the debugging session started in the kernel; the
  // debugger's sidebar opens with it.
  await notebook
    .locator('.jp-NotebookPanel-toolbar .jp-DebuggerBugButton[aria-pressed="true"]')
    .waitFor();
  const sidebar = page.locator(".jp-DebuggerSidebar");
  await sidebar.waitFor();
  log(`debugger on after ${seconds(lab.started)}`);

  // A click in the breakpoint gutter beside the line sets a breakpoint,
  // listed in the sidebar's breakpoints panel.
  await lab.clickGutter(cell, BREAKPOINT_LINE);
  const breakpoint = sidebar.locator(".jp-DebuggerBreakpoints .jp-DebuggerBreakpoint");
  await breakpoint.first().waitFor();
  const breakpoints = await texts(breakpoint);
  log(`breakpoints: ${JSON.stringify(breakpoints)}`);

  // Run the cell: it stops at the breakpoint, so its prompt stays [*].
  await lab.start(cell);
  const frame = sidebar.locator(".jp-DebuggerCallstack-body .jp-DebuggerCallstackFrame");
  await frame.first().waitFor();
  log(`stopped after ${seconds(lab.started)}`);
  const frames = await frame.evaluateAll((rows) =>
    rows.map((row) => ({
      name: row.querySelector(".jp-DebuggerCallstackFrame-name")?.innerText.trim(),
      location: row.querySelector(".jp-DebuggerCallstackFrame-location")?.innerText.trim(),
    })),
  );
  // The variables panel shows one scope at a time: the frame's locals.
  const variables = sidebar.locator(".jp-DebuggerVariables");
  const scope = variables.getByLabel("Scope");
  if ((await scope.count()) > 0) await scope.selectOption("Locals");
  await variables.getByRole("treeitem", { name: "size:" }).waitFor();
  const locals = await variables.getByRole("treeitem").evaluateAll((rows) =>
    rows.map((row) => ({
      name: row.querySelector(".jp-DebuggerVariables-name")?.innerText.trim(),
      value: row.querySelector(".jp-DebuggerVariables-detail")?.innerText.trim(),
    })),
  );
  const prompt = (await cell.locator(".jp-InputPrompt").innerText()).trim();
  await lab.screenshot(screenshot, cell, "center");
  await lab.step("stopped", { breakpoints, frames, locals, prompt });

  // Continue: the cell runs to its end and shows its result.
  await sidebar.locator("jp-button[title^=Continue]").click();
  await cell.locator(".jp-InputPrompt", { hasText: `[${lab.executions}]` }).waitFor();
  await lab.idle();
  const output = (await cell.locator(".jp-OutputArea-output").allInnerTexts()).join("").trim();
  const callStack = await texts(frame);
  log(`cell finished after ${seconds(lab.started)}: ${JSON.stringify(output)}`);
  await lab.step("finished", { output, frames: callStack });
  await lab.close();
} catch (error) {
  await lab.fail(String(error && error.stack ? error.stack : error), failed);
}
