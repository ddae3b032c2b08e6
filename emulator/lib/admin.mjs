// The admin HTTP endpoint on loopback: billing stats for cost tests, the change feed that
// the local Eventarc-like bridge turns into CloudEvents, the query log that index tests
// check.

import http from "node:http";

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
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

const ROUTES = "GET /stats, POST /reset, GET /changes, GET|DELETE /queries";

export function createAdminServer({ stats, feed, queries }) {
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
        return sendJson(res, 200, queries.toJSON());
      case "DELETE /queries":
        queries.reset();
        return sendJson(res, 200, queries.toJSON());
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
