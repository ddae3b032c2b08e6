// Fault injection: make the next N calls of one gRPC method fail with a chosen status, so
// tests can prove how the function and its client library behave when Firestore is
// unavailable, aborts or refuses. Faults wrap every method of the service (ours and the
// package's) and fire before the handler runs: a faulted call changes and records nothing.

import { status } from "@grpc/grpc-js";

const SERVICE = "/google.firestore.v1.Firestore/";
export const FAULT_MESSAGE = "injected fault";

export class FaultRequestError extends Error {}

function statusCode(code) {
  const number = typeof code === "number" ? code : status[code];
  if (!Number.isInteger(number) || number < 1 || number > 16) {
    throw new FaultRequestError(`code must be a gRPC status name or number 1-16 (not OK), got ${JSON.stringify(code)}`);
  }
  return number;
}

export class FaultInjector {
  #armed = []; // { method, code, remaining }, consumed in the order they were armed
  #methods;

  constructor(methods) {
    this.#methods = new Set(methods);
  }

  /** Arm `count` failures of `method` with `code` (a status name such as "UNAVAILABLE", or its number). */
  arm({ method, code = "UNAVAILABLE", count = 1 } = {}) {
    if (!this.#methods.has(method)) {
      throw new FaultRequestError(`method must be one of ${[...this.#methods].sort().join(", ")}; got ${JSON.stringify(method)}`);
    }
    if (!Number.isInteger(count) || count < 1) throw new FaultRequestError(`count must be a positive integer, got ${JSON.stringify(count)}`);
    this.#armed.push({ method, code: statusCode(code), remaining: count });
  }

  clear() {
    this.#armed = [];
  }

  /** The status to fail this call of `method` with, or null to let it through. */
  take(method) {
    const fault = this.#armed.find((armed) => armed.method === method);
    if (!fault) return null;
    fault.remaining -= 1;
    if (fault.remaining === 0) this.#armed.splice(this.#armed.indexOf(fault), 1);
    return { code: fault.code, details: FAULT_MESSAGE };
  }

  toJSON() {
    return this.#armed.map(({ method, code, remaining }) => ({ method, code: status[code], remaining }));
  }
}

/** The Firestore methods the server serves (the names POST /faults accepts). */
export function serviceMethods(grpcServer) {
  return [...grpcServer.handlers.keys()].filter((path) => path.startsWith(SERVICE)).map((path) => path.slice(SERVICE.length));
}

/** Put a fault check in front of every Firestore method, keeping each handler's (de)serializers. */
export function installFaults(grpcServer, faults) {
  for (const method of serviceMethods(grpcServer)) {
    const path = `${SERVICE}${method}`;
    const registered = grpcServer.handlers.get(path);
    const original = registered.func;
    const streamsResponses = registered.type === "serverStream" || registered.type === "bidi";
    const wrapped = streamsResponses
      ? (call) => {
        const fault = faults.take(method);
        return fault ? call.emit("error", fault) : original(call);
      }
      : (call, callback) => {
        const fault = faults.take(method);
        return fault ? callback(fault) : original(call, callback);
      };
    grpcServer.unregister(path);
    grpcServer.register(path, wrapped, registered.serialize, registered.deserialize, registered.type);
  }
}
