// Local Firestore for runs and tests: the @firestore-emulator/server gRPC server, bound to
// 127.0.0.1 only, with handlers patched to behave like real Firestore for what the mail
// function relies on (see lib/handlers.mjs, lib/commit.mjs, lib/transactions.mjs, lib/query.mjs),
// plus an admin HTTP endpoint (stats, change feed, query log, fault injection; lib/admin.mjs).
//
//   node emulator/start.mjs --port 0 --admin-port 0
//   -> READY 127.0.0.1:<grpc port> admin=127.0.0.1:<admin port>
//
// Stops on SIGTERM/SIGINT, and when stdin is a pipe that closes (a crashed parent).

import fs from "node:fs";
import { parseArgs } from "node:util";

import { ServerCredentials } from "@grpc/grpc-js";
import { FirestoreServer } from "@firestore-emulator/server";

import { createAdminServer } from "./lib/admin.mjs";
import { ChangeFeed } from "./lib/changes.mjs";
import { FaultInjector, installFaults, serviceMethods } from "./lib/faults.mjs";
import { createHandlers, installHandlers } from "./lib/handlers.mjs";
import { QueryLog } from "./lib/querylog.mjs";
import { BillingStats } from "./lib/stats.mjs";
import { DocumentStore, patchDocumentClass } from "./lib/store.mjs";
import { TransactionRegistry } from "./lib/transactions.mjs";

const HOST = "127.0.0.1";

function fail(message, exitCode = 2) {
  process.stderr.write(`emulator: ${message}\n`);
  process.exit(exitCode);
}

function portOption(values, name) {
  const text = values[name] ?? "0";
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) fail(`--${name} must be a port number 0-65535 (0 picks a free one), got ${JSON.stringify(text)}`);
  return port;
}

function parseOptions() {
  try {
    const { values } = parseArgs({ options: { port: { type: "string" }, "admin-port": { type: "string" } } });
    return { port: portOption(values, "port"), adminPort: portOption(values, "admin-port") };
  } catch (err) {
    return fail(`${err.message}; usage: node emulator/start.mjs --port P --admin-port A`);
  }
}

// The package's start() binds 0.0.0.0; we bind its gRPC server to loopback ourselves.
function bindGrpc(grpcServer, port) {
  return new Promise((resolve, reject) => {
    grpcServer.bindAsync(`${HOST}:${port}`, ServerCredentials.createInsecure(), (err, boundPort) =>
      (err ? reject(err) : resolve(boundPort)));
  });
}

function listenHttp(server, port) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, HOST, () => resolve(server.address().port));
  });
}

function stdinIsPipe() {
  try {
    const stat = fs.fstatSync(0);
    return stat.isFIFO() || stat.isSocket();
  } catch {
    return false;
  }
}

async function main() {
  const { port, adminPort } = parseOptions();

  const firestore = new FirestoreServer();
  patchDocumentClass();
  const stats = new BillingStats();
  const feed = new ChangeFeed();
  const queries = new QueryLog();
  installHandlers(firestore.server, createHandlers({
    state: firestore.state,
    store: new DocumentStore(firestore.state),
    transactions: new TransactionRegistry(),
    stats,
    feed,
    queries,
  }));
  // Last, so a fault fires in front of our handlers and the package's alike.
  const faults = new FaultInjector(serviceMethods(firestore.server));
  installFaults(firestore.server, faults);
  const admin = createAdminServer({ stats, feed, queries, faults });

  let grpcPort;
  let boundAdminPort;
  try {
    grpcPort = await bindGrpc(firestore.server, port);
    boundAdminPort = await listenHttp(admin, adminPort);
  } catch (err) {
    firestore.server.forceShutdown();
    fail(`cannot listen on ${HOST}: ${err.message}`, 1);
  }

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    admin.endStreams();
    admin.close();
    firestore.server.forceShutdown();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (stdinIsPipe()) {
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
  }

  process.stdout.write(`READY ${HOST}:${grpcPort} admin=${HOST}:${boundAdminPort}\n`);
}

main().catch((err) => fail(`failed to start: ${err.message}`, 1));
