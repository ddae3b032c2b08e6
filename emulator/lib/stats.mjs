// Operation counts as Firestore bills them, so tests can prove a per-email cost.
// Writes: each write of a successful commit (a write carrying transforms is still one).
// Reads: each document a read returns; as Firestore bills, a requested document that is
// missing costs one read too, and a query that returns nothing costs one read.

import { splitDocumentName } from "./store.mjs";

const relativePath = (name) => splitDocumentName(name).path;

export class BillingStats {
  constructor() {
    this.reset();
  }

  reset() {
    this.commits = 0;
    this.writes = 0;
    this.reads = 0;
    this.writesByDocument = {};
    this.readsByDocument = {};
  }

  countCommit(writtenNames) {
    this.commits += 1;
    for (const name of writtenNames) {
      const path = relativePath(name);
      this.writes += 1;
      this.writesByDocument[path] = (this.writesByDocument[path] ?? 0) + 1;
    }
  }

  countDocumentReads(names) {
    for (const name of names) {
      const path = relativePath(name);
      this.reads += 1;
      this.readsByDocument[path] = (this.readsByDocument[path] ?? 0) + 1;
    }
  }

  /** A query bills at least one read even when it returns no documents. */
  countQuery(resultNames) {
    if (resultNames.length === 0) this.reads += 1;
    else this.countDocumentReads(resultNames);
  }

  toJSON() {
    return {
      commits: this.commits,
      writes: this.writes,
      reads: this.reads,
      writesByDocument: this.writesByDocument,
      readsByDocument: this.readsByDocument,
    };
  }
}
