// Handlebars.js renders template documents exactly as firestore-send-email's functions/src/templates.ts
// does: one Handlebars environment per field, partials registered per field from the partial's field of
// the same name, subject and text compiled with { noEscape: true }, html and amp escaped, attachments as
// JSON.stringify(attachments) compiled in strict mode and parsed back.
// Protocol (tests/templates/test_conformance.py): one JSON request per stdin line,
//   {"fields": {"subject": src, ...}, "attachments": [...] | null, "partials": {name: {field: src}}, "data": ...}
// one JSON answer per stdout line: {"fields": {field: text}, "attachments": [...]} or {"error": message}.
// {"version": true} answers {"version": Handlebars.VERSION}.
// Non-finite numbers travel as {"$number": "NaN" | "Infinity" | "-Infinity"} (JSON has none).
"use strict";
const Handlebars = require("handlebars");
const readline = require("readline");

// The protocol owns stdout: Handlebars.js's `log` helper (console.log/info/...) goes to stderr.
for (const method of ["log", "info", "debug", "warn", "error"]) {
  console[method] = (...args) => process.stderr.write(args.join(" ") + "\n");
}

const FIELDS = ["subject", "html", "text", "amp"];
const NO_ESCAPE = new Set(["subject", "text"]);

function revive(key, value) {
  if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 1 && "$number" in value) {
    return Number(value.$number);
  }
  return value;
}

function render(request) {
  const out = { fields: {} };
  for (const field of FIELDS) {
    const source = request.fields[field];
    if (!source) continue;
    const env = Handlebars.create();
    for (const [name, partial] of Object.entries(request.partials || {})) {
      if (partial[field]) env.registerPartial(name, partial[field]);
    }
    const template = NO_ESCAPE.has(field) ? env.compile(source, { noEscape: true }) : env.compile(source);
    out.fields[field] = template(request.data);
  }
  if (request.attachments) {
    const template = Handlebars.create().compile(JSON.stringify(request.attachments), { strict: true });
    out.attachments = JSON.parse(template(request.data));
  }
  return out;
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let answer;
  try {
    const request = JSON.parse(line, revive);
    answer = request.version ? { version: Handlebars.VERSION } : render(request);
  } catch (error) {
    answer = { error: String((error && error.message) || error).split("\n")[0] };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
