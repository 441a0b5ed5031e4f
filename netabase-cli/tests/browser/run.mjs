// A web page the operator visits attacks a running node from another local origin, in a
// real browser (headless Chromium driven by playwright-core).
//
// The node runs with a TCP control endpoint and a metrics endpoint on 127.0.0.1. A page
// served from another 127.0.0.1 port fires, at both ports: a no-cors fetch POST whose body
// is control commands (a put and a shutdown), a form POST (text/plain, the same body), and a
// WebSocket that would send them once open. It also tries to read the metrics with a CORS
// fetch, and a page under a name resolved to 127.0.0.1 (DNS rebinding, through Chromium's
// host resolver rules) loads the metrics as its own origin.
//
// Expected: the node still runs, none of the puts took effect, the node counted a refusal
// for each request that reached it (so the attacks did reach it), no WebSocket opened, the
// CORS read failed, and the rebound name got 403.
//
// Usage: node run.mjs [PATH-TO-netabase] (default: target/debug/netabase from the
// repository root). CHROMIUM overrides the browser (default /usr/bin/chromium).

import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const netabase = path.resolve(process.argv[2] ?? path.join(here, "../../../target/debug/netabase"));
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// Every wait below has this deadline; the page's own waits are shorter.
const DEADLINE_MS = 60_000;
const started = Date.now();
const failures = [];

function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

function withDeadline(promise, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "netabase-browser-"));
const dataDir = path.join(work, "node");

// The node: its ready line tells where its endpoints are.
const node = spawn(
  netabase,
  [
    "node", "--data-dir", dataDir, "--listen", "/ip4/127.0.0.1/tcp/0",
    "--control", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
    "--no-mdns", "--json", "--stop-on-eof",
  ],
  { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "info" } },
);
let nodeExit = null;
const exited = new Promise((resolve) => node.on("exit", (code, signal) => {
  nodeExit = { code, signal };
  resolve(nodeExit);
}));
let logs = "";
node.stderr.on("data", (chunk) => { logs += chunk; });
const lines = createInterface({ input: node.stdout });
const ready = await withDeadline(new Promise((resolve, reject) => {
  lines.once("line", (line) => resolve(JSON.parse(line)));
  node.once("exit", () => reject(new Error(`the node exited before it was ready:\n${logs}`)));
}), "the node's ready line");
const controlPort = ready.control_tcp.split(":").pop();
const metricsPort = ready.metrics.split(":").pop();
console.log(`node ${ready.peer_id}: control 127.0.0.1:${controlPort}, metrics 127.0.0.1:${metricsPort}`);

/** Runs `netabase ARGS` on the node's Unix socket: its exit code and output. */
function cli(...args) {
  const out = spawnSync(netabase, [...args, "--node", dataDir], { encoding: "utf8", timeout: DEADLINE_MS });
  return { code: out.status, stdout: out.stdout, stderr: out.stderr };
}

/** The node's metrics, read as a scraper does. */
function scrape() {
  return withDeadline(new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: metricsPort, path: "/metrics" }, (res) => {
      let body = "";
      res.on("data", (c) => { body += c; });
      res.on("end", () => resolve(body));
    }).on("error", reject);
  }), "the metrics endpoint");
}

function sample(text, series) {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ").pop()) : 0;
}

// The attacking page, served from another origin (this server's port).
const body = (key) => `{"req":1,"cmd":"put","key":"${key}","value":"x"}\n{"req":2,"cmd":"shutdown"}\n`;
const page = `<!doctype html>
<html><head><title>attacking</title></head><body>
<iframe name="sink" style="display:none"></iframe>
<script>
const targets = { control: ${controlPort}, metrics: ${metricsPort} };
const results = {};
const body = ${body.toString()};
const wait = (ms) => new Promise((r) => setTimeout(r, ms));

async function noCorsPost(name, port) {
  try {
    await fetch("http://127.0.0.1:" + port + "/", { method: "POST", mode: "no-cors", body: body("pwned-fetch-" + name) });
    results[name + " no-cors POST"] = "sent (opaque answer)";
  } catch (e) {
    results[name + " no-cors POST"] = "sent, failed: " + e.message;
  }
}

function formPost(name, port) {
  // text/plain encodes NAME=VALUE: the name carries the JSON up to the value's quote.
  const form = document.createElement("form");
  form.method = "POST";
  form.enctype = "text/plain";
  form.target = "sink";
  form.action = "http://127.0.0.1:" + port + "/";
  const input = document.createElement("input");
  input.name = '{"req":3,"cmd":"put","key":"pwned-form-' + name + '","value":"';
  input.value = '"}\\n{"req":4,"cmd":"shutdown"}\\n';
  form.appendChild(input);
  document.body.appendChild(form);
  const frame = document.querySelector("iframe");
  const done = new Promise((r) => frame.addEventListener("load", r, { once: true }));
  form.submit();
  return Promise.race([done, wait(5000)]).then(() => { results[name + " form POST"] = "submitted"; });
}

function webSocket(name, port) {
  return new Promise((resolve) => {
    let opened = false;
    const ws = new WebSocket("ws://127.0.0.1:" + port + "/");
    ws.onopen = () => {
      opened = true;
      ws.send(body("pwned-ws-" + name));
    };
    const finish = (how) => { results[name + " WebSocket"] = (opened ? "OPENED, " : "never opened, ") + how; resolve(); };
    ws.onerror = () => finish("error");
    ws.onclose = (e) => finish("closed " + e.code);
    setTimeout(() => finish("no answer in 5 s"), 5000);
  });
}

async function corsRead() {
  try {
    const r = await fetch("http://127.0.0.1:" + targets.metrics + "/metrics");
    const text = await r.text();
    results["metrics CORS read"] = "READ " + text.length + " bytes";
  } catch (e) {
    results["metrics CORS read"] = "blocked: " + e.message;
  }
}

(async () => {
  for (const [name, port] of Object.entries(targets)) {
    await noCorsPost(name, port);
    await formPost(name, port);
    await webSocket(name, port);
  }
  await corsRead();
  window.results = results;
  document.title = "done";
})();
</script></body></html>`;

const pageServer = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(page);
});
await new Promise((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
const pagePort = pageServer.address().port;
console.log(`attacking page at http://127.0.0.1:${pagePort}/`);

// Chromium: headless, as root without its sandbox, nothing in the background, a fresh
// profile; rebind.test resolves to 127.0.0.1.
const profile = fs.mkdtempSync(path.join(work, "profile-"));
const browserStarted = Date.now();
const context = await chromium.launchPersistentContext(profile, {
  executablePath: browserPath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP rebind.test 127.0.0.1",
  ],
  timeout: DEADLINE_MS,
});
console.log(`chromium ${context.browser()?.version() ?? ""} started in ${Date.now() - browserStarted} ms`);
let results;
let rebound;
try {
  const tab = await context.newPage();
  await tab.goto(`http://127.0.0.1:${pagePort}/`, { timeout: DEADLINE_MS });
  await tab.waitForFunction(() => document.title === "done", null, { timeout: DEADLINE_MS });
  results = await tab.evaluate(() => window.results);
  // DNS rebinding: a name the page's author controls, now pointing at 127.0.0.1, loads
  // the metrics endpoint as its own origin.
  const rebind = await context.newPage();
  const answer = await rebind.goto(`http://rebind.test:${metricsPort}/metrics`, { timeout: DEADLINE_MS });
  rebound = { status: answer?.status(), body: await rebind.content() };
} finally {
  await context.close();
  pageServer.close();
}

for (const [what, outcome] of Object.entries(results)) console.log(`page: ${what}: ${outcome}`);
check(nodeExit === null, `the node still runs (${JSON.stringify(nodeExit)})`);
for (const [what, outcome] of Object.entries(results)) {
  if (what.endsWith("WebSocket")) check(outcome.startsWith("never opened"), `${what} never opened`);
}
check(results["metrics CORS read"].startsWith("blocked"), "the page could not read the metrics");
check(rebound.status === 403, `the rebound name got ${rebound.status} from the metrics endpoint`);
check(!rebound.body.includes("netabase_routing_table_peers"), "the rebound page holds no metrics");
for (const kind of ["fetch", "form", "ws"]) {
  for (const target of ["control", "metrics"]) {
    const key = `pwned-${kind}-${target}`;
    const got = cli("get", key);
    check(got.code === 1, `no record ${key} (get exits ${got.code})`);
  }
}
const info = cli("info", "--json");
check(info.code === 0 && JSON.parse(info.stdout).peer_id === ready.peer_id, "the node answers on its Unix socket");
const metrics = await scrape();
const http_ = sample(metrics, 'netabase_control_refusals_total{reason="http"}');
const token = sample(metrics, 'netabase_control_refusals_total{reason="token"}');
const host = sample(metrics, 'netabase_metrics_refusals_total{reason="host"}');
console.log(`refusals counted: control http ${http_}, control token ${token}, metrics host ${host}`);
// The no-cors POST, the form POST and the WebSocket handshake each reached the control
// endpoint as an HTTP request line.
check(http_ >= 3, "the node refused at least 3 HTTP requests on its control endpoint");
check(host >= 1, "the metrics endpoint refused the rebound name");

const stop = cli("shutdown");
check(stop.code === 0, "the node stops on a shutdown from its own user");
const exit = await withDeadline(exited, "the node's exit");
check(exit.code === 0, `the node exited cleanly (${JSON.stringify(exit)})`);
fs.rmSync(work, { recursive: true, force: true });

console.log(`browser test: ${failures.length === 0 ? "passed" : `${failures.length} check(s) failed`} in ${Date.now() - started} ms`);
if (failures.length > 0) {
  console.log(`node logs:\n${logs}`);
  process.exit(1);
}
