// Parse Mermaid diagrams with Mermaid's own parser, under Node.js and without a browser.
//
// Input (stdin): a JSON array of diagram texts.
// Output (stdout): one JSON line per diagram, in input order:
//   {"index": 0, "ok": true, "diagramType": "flowchart-v2"}
//   {"index": 1, "ok": false, "error": "Parse error on line 3: ..."}
// Exit status: 0 when every diagram parsed, 1 when any failed, 2 on unusable input.
//
// mermaid.parse() runs the diagram's real grammar (the flowchart one is a Jison parser)
// and its database actions, and throws on a syntax error. Those actions sanitise labels
// with DOMPurify, which needs a `window` when the module is first imported: without one,
// parsing any flowchart with a label fails with "DOMPurify.addHook is not a function".
// So a jsdom window is installed before mermaid is imported.

import { JSDOM } from "jsdom";

// Keep stdout for the results: anything a library logs goes to stderr.
for (const level of ["log", "info", "debug", "trace", "warn"]) {
  console[level] = (...args) => console.error(...args);
}

const { window } = new JSDOM("<!DOCTYPE html><html><body></body></html>");
globalThis.window = window;
globalThis.document = window.document;

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

let diagrams;
try {
  diagrams = JSON.parse(await readStdin());
} catch (e) {
  console.error(`parse.mjs: stdin is not JSON: ${e.message}`);
  process.exit(2);
}
if (!Array.isArray(diagrams) || !diagrams.every((d) => typeof d === "string")) {
  console.error("parse.mjs: stdin must be a JSON array of strings");
  process.exit(2);
}

let failed = 0;
for (const [index, text] of diagrams.entries()) {
  let result;
  try {
    const parsed = await mermaid.parse(text);
    result = { index, ok: true, diagramType: parsed.diagramType };
  } catch (e) {
    failed += 1;
    result = { index, ok: false, error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}
window.close();
process.exitCode = failed ? 1 : 0;
