// The admin HTTP endpoint on loopback: billing stats for cost tests, the change feed that
// the local Eventarc-like bridge turns into CloudEvents, the query log that index tests
// check, and fault injection.

import http from "node:http";

import { FaultRequestError } from "./faults.mjs";

const MAX_BODY_BYTES = 64 * 1024;

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** Stream every later change as NDJSON until the client goes away. */
function streamChanges(req, res, feed) {
  const unsubscribe = feed.subscribe((line) => res.write(line));
  res.on("close", unsubscribe);
  res.on("error", unsubscribe); // a subscriber that vanished mid-write must not crash the server
  // Headers go out only once subscribed: a client that has them sees every later commit.
  res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
  res.flushHeaders();
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) reject(new FaultRequestError("request body is too large"));
      else chunks.push(chunk);
    });
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8") || "null"));
      } catch (err) {
        reject(new FaultRequestError(`request body is not JSON: ${err.message}`));
      }
    });
    req.on("error", reject);
  });
}

async function armFault(req, res, faults) {
  try {
    const body = await readJson(req);
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new FaultRequestError('body must be a JSON object such as {"method": "Commit", "code": "UNAVAILABLE", "count": 1}');
    }
    faults.arm(body);
    return sendJson(res, 200, faults.toJSON());
  } catch (err) {
    if (err instanceof FaultRequestError) return sendJson(res, 400, { error: err.message });
    throw err;
  }
}

const ROUTES = "GET /stats, POST /reset, GET /changes, GET|DELETE /queries, GET|POST|DELETE /faults";

export function createAdminServer({ stats, feed, queries, faults }) {
  const openStreams = new Set();
  const server = http.createServer((req, res) => {
    const route = `${req.method} ${new URL(req.url, "http://admin").pathname}`;
    switch (route) {
      case "GET /stats":
        return sendJson(res, 200, stats.toJSON());
      case "POST /reset":
        // Stats and the query log restart together: a test measures one stretch of work.
        stats.reset();
        queries.reset();
        return sendJson(res, 200, stats.toJSON());
      case "GET /changes":
        openStreams.add(res);
        res.on("close", () => openStreams.delete(res));
        return streamChanges(req, res, feed);
      case "GET /queries":
        return sendJson(res, 200, queries.toJSON(), { "x-queries-dropped": String(queries.dropped) });
      case "DELETE /queries":
        queries.reset();
        return sendJson(res, 200, queries.toJSON());
      case "GET /faults":
        return sendJson(res, 200, faults.toJSON());
      case "POST /faults":
        return armFault(req, res, faults).catch((err) => sendJson(res, 500, { error: String(err?.message ?? err) }));
      case "DELETE /faults":
        faults.clear();
        return sendJson(res, 200, faults.toJSON());
      default:
        return sendJson(res, 404, { error: `no route ${route}; try ${ROUTES}` });
    }
  });
  // Long-lived change streams would otherwise keep close() waiting forever.
  server.endStreams = () => {
    for (const res of openStreams) res.end();
  };
  return server;
}
