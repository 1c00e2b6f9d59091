// What the matrix-js-sdk scenarios share: named steps printed as they pass, the SDK's logging
// kept to its errors, the last requests recorded, and on the first failure the step, the
// error (HTTP status, errcode or OAuth error) and those requests, then exit 1.

import * as sdk from "../../tools/node_modules/matrix-js-sdk/lib/index.js";
import { logger } from "../../tools/node_modules/matrix-js-sdk/lib/logger.js";

const { MatrixError, OAuth2HTTPError } = sdk;

// The SDK logs chattily; keep only its errors (its RTC sessions log debug on their own loggers).
logger.setLevel("error");
console.debug = () => {};
export const quietLogger = {
  trace() {}, debug() {}, info() {}, warn() {},
  error: (...args) => console.log("  [sdk error]", ...args.map((a) => a?.message ?? a)),
  getChild: () => quietLogger,
};
// For requests that are meant to be refused (the SDK logs those as errors).
export const silentLogger = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, getChild: () => silentLogger };

const recent = [];
let step = "start";

// A fetch that keeps the last requests (and non-2xx answers), `redact` applied to what it keeps.
export function recordingFetch(fetchImpl, redact = (s) => String(s)) {
  return async (input, init = {}) => {
    const entry = { method: init.method || "GET", url: redact(input) };
    if (init.body != null) entry.body = redact(String(init.body)).slice(0, 500);
    recent.push(entry);
    if (recent.length > 8) recent.shift();
    const res = await fetchImpl(input, init);
    entry.status = res.status;
    if (!res.ok) entry.response = redact(await res.clone().text()).slice(0, 500);
    return res;
  };
}

// Names the step now running (for a failure's report).
export function begin(name) {
  step = name;
}

export function ok(name) {
  console.log(`ok   ${name}`);
}

export function fail(err) {
  console.log(`FAIL ${step}: ${err?.message ?? err}`);
  if (err instanceof MatrixError) {
    console.log(`  MatrixError httpStatus=${err.httpStatus} errcode=${err.errcode} url=${err.url}`);
    console.log(`  data=${JSON.stringify(err.data)}`);
  } else if (err instanceof OAuth2HTTPError) {
    console.log(`  OAuth2HTTPError httpStatus=${err.httpStatus} error=${err.error} description=${err.error_description}`);
  } else if (err?.cause) {
    console.log(`  cause: ${err.cause?.message ?? err.cause}`);
  }
  if (err?.stack) console.log(err.stack.split("\n").slice(1, 6).join("\n"));
  console.log("  recent requests:");
  for (const r of recent) console.log(`    ${JSON.stringify(r)}`);
  process.exit(1);
}

// Runs fn as a named step.
export async function run(name, fn) {
  begin(name);
  const out = await fn();
  ok(name);
  return out;
}
