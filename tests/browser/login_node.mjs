// Drives JupyterLab in headless Chromium through a login-node session of
// test_login_node.py's notebook: batch job x pending, running, done, then
// `%pmp status`; batch job y running across a kernel restart, its cell re-run
// and attached to the same job, done. At each `step` the test checks Slurm
// and moves the story on (frees the nodes, lets a job end); it answers with
// the job id the display must name.
//
//   node login_node.mjs NOTEBOOK_URL SCREENSHOT_PREFIX
//
// Screenshots are SCREENSHOT_PREFIX-<step>.png (-failed.png on failure).
// Exits 0 on success, 1 with a message on stderr otherwise.

import { LabPage, log, seconds } from "./lab_page.mjs";

const [url, prefix] = process.argv.slice(2);
if (!url || !prefix) {
  console.error("usage: node login_node.mjs NOTEBOOK_URL SCREENSHOT_PREFIX");
  process.exit(2);
}
// A batch job's start or end (on a test Slurm shared with other tests).
const JOB_TIMEOUT_MS = 240_000;

const lab = await LabPage.launch();
const text = async (locator) => (await locator.innerText()).trim();
// A job id as a whole number in a display (whatever words surround it).
const naming = (job) => new RegExp(`\\b${job}\\b`);

try {
  await lab.openNotebook(url);
  const config = lab.codeCell("%pmp config");
  const x = lab.codeCell("--name x");
  const y = lab.codeCell("--name y");
  const status = lab.notebook.locator(".jp-CodeCell").filter({
    has: lab.page.locator(".jp-InputArea-editor", { hasText: /^\s*%pmp status\s*$/ }),
  });
  await lab.step("kernel-idle");

  // The nodes are reserved (by the test): x is submitted and waits.
  await lab.run(config);
  await lab.run(x);
  await lab.display(x, "queued").waitFor();
  const { job: xJob, reason } = await lab.step("x-queued");
  const pending = lab.display(x, "queued", naming(xJob)).filter({ hasText: reason });
  await pending.waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.screenshot(`${prefix}-pending.png`, x, "center");
  await lab.step("x-pending", { text: await text(pending) });

  // The reservation ended: x starts.
  const running = lab.display(x, "running", naming(xJob));
  await running.waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.screenshot(`${prefix}-running.png`, x, "center");
  await lab.step("x-running", { text: await text(running) });

  // x may end: done with its result, and `%pmp status` lists it.
  const done = lab.display(x, "done", naming(xJob));
  await done.waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.run(status.first());
  const table = status.first().locator('.pmp-status-table[data-state="done"]');
  await table.waitFor();
  await lab.screenshot(`${prefix}-done.png`, x);
  await lab.step("x-done", { text: await text(done), table: await text(table) });

  // y runs when the kernel restarts.
  await lab.run(y);
  const { job: yJob } = await lab.step("y-submitted");
  await lab.display(y, "running", naming(yJob)).waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.restartKernel();
  await lab.step("restarted");
  await lab.idle();
  log(`kernel restarted and idle after ${seconds(lab.started)}`);
  // What the page says before anything is re-run: the ended kernel's displays.
  await lab.screenshot(`${prefix}-restarted.png`, y, "center");

  // Re-running the cells attaches to y's job, still running.
  await lab.run(config);
  await lab.run(y);
  const attached = lab.display(y, "running", naming(yJob));
  await attached.waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.screenshot(`${prefix}-reattached.png`, y, "center");
  await lab.step("y-attached", { text: await text(attached) });

  // y may end: done, and `%pmp status` of the new kernel lists it.
  const yDone = lab.display(y, "done", naming(yJob));
  await yDone.waitFor({ timeout: JOB_TIMEOUT_MS });
  await lab.run(status.last());
  const after = status.last().locator('.pmp-status-table[data-state="done"]');
  await after.waitFor();
  await lab.screenshot(`${prefix}-after-restart.png`, y);
  await lab.step("y-done", { text: await text(yDone), table: await text(after) });
  await lab.close();
} catch (error) {
  await lab.fail(String(error && error.stack ? error.stack : error), `${prefix}-failed.png`);
}
