// Errors that reach a gRPC client with the status code real Firestore uses.

import { status } from "@grpc/grpc-js";

export class FirestoreError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export const notFound = (message) => new FirestoreError(status.NOT_FOUND, message);
export const alreadyExists = (message) => new FirestoreError(status.ALREADY_EXISTS, message);
export const failedPrecondition = (message) => new FirestoreError(status.FAILED_PRECONDITION, message);
export const aborted = (message) => new FirestoreError(status.ABORTED, message);
export const invalidArgument = (message) => new FirestoreError(status.INVALID_ARGUMENT, message);
export const unimplemented = (message) => new FirestoreError(status.UNIMPLEMENTED, message);

/** Any thrown value -> a one-line gRPC status object. */
export function toGrpcStatus(err) {
  if (err instanceof FirestoreError) return { code: err.code, details: err.message };
  const message = String(err?.message ?? err).split("\n")[0];
  // Bad paths and field paths from the package and our parsers are the caller's fault.
  if (/invalid (document name|path)|field path/i.test(message)) {
    return { code: status.INVALID_ARGUMENT, details: message };
  }
  return { code: status.INTERNAL, details: `emulator error: ${message}` };
}
