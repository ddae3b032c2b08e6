// nodemailer's side of bench/smtp.py: one process, one pooled transport (pool: true), the same line
// protocol as bench/smtp_client.py. Started by bench/smtp.py, not by hand:
//
//     node bench/node/run.js CONFIG.json
//
// Warm the pool up, print "ready", wait for "go" on stdin, send `messages` emails with `senders`
// sendMail calls outstanding at a time (nodemailer builds each message itself from the same fields
// the mail document has, attachment as base64 text), then print one JSON line: elapsed seconds,
// CPU seconds of this process over the measured part (process.cpuUsage: user + system), per-message
// latencies (ms) and failures. The transport is closed after the JSON line.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const spec = JSON.parse(fs.readFileSync(config.message, 'utf8'));
const nodemailer = require(config.package); // "nodemailer10" or "nodemailer8" (npm aliases)

function message(index) {
  const fields = { from: spec.from, to: spec.to, subject: `${spec.subject} ${index}`, text: spec.text };
  if (spec.html) fields.html = spec.html;
  if (spec.attachment) {
    const a = spec.attachment;
    fields.attachments = [{ filename: a.filename, content: a.contentBase64, encoding: 'base64', contentType: a.contentType }];
  }
  return fields;
}

async function sendAll(transport, first, count, senders) {
  let next = first;
  const end = first + count;
  const latencies = [];
  const failures = [];
  async function worker() {
    while (next < end) {
      const index = next++;
      const started = performance.now();
      try {
        const info = await transport.sendMail(message(index));
        if (info.accepted && info.accepted.length) latencies.push(performance.now() - started);
        else failures.push(`not accepted: ${info.response}`);
      } catch (err) {
        failures.push(`${err.code || err.name}: ${err.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: senders }, worker));
  return { latencies, failures };
}

function nextLine(lines) {
  return new Promise((resolve) => lines.once('line', resolve));
}

async function main() {
  const transport = nodemailer.createTransport({
    pool: true,
    maxConnections: config.connections,
    host: config.host,
    port: config.port,
    secure: false,
    requireTLS: config.requireTLS,
    tls: { ca: config.ca ? [fs.readFileSync(config.ca)] : undefined },
    auth: config.user ? { user: config.user, pass: config.password } : undefined,
  });
  const lines = readline.createInterface({ input: process.stdin });
  const warm = await sendAll(transport, 0, config.warmup, config.senders);
  if (warm.failures.length) {
    console.log(JSON.stringify({ error: `warm-up failed: ${warm.failures[0]}` }));
    process.exit(1);
  }
  console.log('ready');
  if ((await nextLine(lines)).trim() !== 'go') process.exit(1);
  const cpu = process.cpuUsage();
  const started = performance.now();
  const { latencies, failures } = await sendAll(transport, config.warmup, config.messages, config.senders);
  const elapsed = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  const version = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', config.package, 'package.json'), 'utf8')).version;
  console.log(JSON.stringify({
    elapsed, cpu: (used.user + used.system) / 1e6, latencies, failures: failures.slice(0, 5),
    failed: failures.length, runtime: `nodemailer ${version}, node ${process.versions.node}`,
  }));
  transport.close();
  lines.close();
}

main().catch((err) => {
  console.log(JSON.stringify({ error: `${err.name}: ${err.message}` }));
  process.exit(1);
});
