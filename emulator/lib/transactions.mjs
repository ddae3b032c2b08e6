// Transactions as real Firestore runs them for server clients: reads inside a read-write
// transaction are remembered, and the commit is ABORTED if any of them (a document, or the
// result of a query) changed in between, so the client retries the whole transaction.
// (Real Firestore gets there with locks; the observable outcome — serializable commits,
// conflicting ones aborted and retried — is the same.)

import { randomBytes } from "node:crypto";

import { aborted, invalidArgument } from "./errors.mjs";

// Real Firestore ends a transaction after 270 seconds.
const MAX_LIFETIME_MS = 270_000;

const keyOf = (id) => Buffer.from(id).toString("hex");

export class TransactionRegistry {
  #open = new Map();

  /** Start a transaction; `options` is a TransactionOptions message (or undefined). */
  begin(options) {
    this.#expireOld();
    const id = randomBytes(16);
    this.#open.set(keyOf(id), {
      readOnly: options?.mode === "read_only",
      startedAt: Date.now(),
      documentVersions: new Map(),
      queries: [],
    });
    return Uint8Array.from(id);
  }

  lookup(id) {
    const tx = this.#open.get(keyOf(id));
    if (!tx) throw invalidArgument("transaction is not open (it expired, was committed or was rolled back)");
    return tx;
  }

  finish(id) {
    this.#open.delete(keyOf(id));
  }

  #expireOld() {
    const cutoff = Date.now() - MAX_LIFETIME_MS;
    for (const [key, tx] of this.#open) if (tx.startedAt < cutoff) this.#open.delete(key);
  }
}

const versionOf = (snapshot) => (snapshot.exists ? snapshot.updateMicros : 0);
const resultSignature = (snapshots) => snapshots.map((s) => `${s.name}@${versionOf(s)}`).join("\n");

/** Remember the version of a document a transaction read (the first read counts). */
export function recordDocumentRead(tx, snapshot) {
  if (!tx.documentVersions.has(snapshot.name)) tx.documentVersions.set(snapshot.name, versionOf(snapshot));
}

/** Remember a query's result so a later phantom or change aborts the commit. */
export function recordQuery(tx, rerun, snapshots) {
  tx.queries.push({ rerun, signature: resultSignature(snapshots) });
}

/** Throw ABORTED if anything the transaction read has changed since. */
export function assertReadsUnchanged(tx, store) {
  for (const [name, version] of tx.documentVersions) {
    if (versionOf(store.snapshot(name)) !== version) {
      throw aborted(`transaction aborted: ${name} changed since the transaction read it; retry the transaction`);
    }
  }
  for (const { rerun, signature } of tx.queries) {
    if (resultSignature(rerun()) !== signature) {
      throw aborted("transaction aborted: a query result changed since the transaction ran it; retry the transaction");
    }
  }
}
