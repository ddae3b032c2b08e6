// The change feed: one record per changed document of each successful commit, in commit
// order, for the local Eventarc-like bridge. Document bytes are the google.firestore.v1.Document
// a later read returns, so update_time matches what preconditions compare against.

import { microsToRfc3339 } from "./clock.mjs";
import { snapshotToDocument, splitDocumentName } from "./store.mjs";

const encodeDocument = (snapshot) =>
  snapshot.exists ? Buffer.from(snapshotToDocument(snapshot).serialize()).toString("base64") : null;

export function changeRecord({ before, after }, commitMicros) {
  const { database, path } = splitDocumentName(after.name);
  return {
    document: after.name,
    database,
    path,
    kind: !before.exists ? "created" : after.exists ? "updated" : "deleted",
    old: encodeDocument(before),
    new: encodeDocument(after),
    time: microsToRfc3339(commitMicros),
  };
}

export class ChangeFeed {
  #subscribers = new Set();

  /** `send(line)` receives every later record as one NDJSON line; returns an unsubscribe function. */
  subscribe(send) {
    this.#subscribers.add(send);
    return () => this.#subscribers.delete(send);
  }

  publish(records) {
    for (const record of records) {
      const line = `${JSON.stringify(record)}\n`;
      for (const send of this.#subscribers) send(line);
    }
  }
}
