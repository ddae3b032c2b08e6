// The package's FirestoreState holds the documents; this module reads and replaces a
// document's state as one step, with microsecond create/update times, and tells the
// package's listeners about it.

import { FirestoreStateDocument } from "@firestore-emulator/server";
import { Document } from "@firestore-emulator/proto/dist/google/firestore/v1/document.js";

import { microsToTimestamp } from "./clock.mjs";
import { parseFieldPath } from "./fieldpath.mjs";
import { getAt, makeReferenceField } from "./values.mjs";

export class InvalidPathError extends Error {}

/** "projects/p/databases/db/documents/mail/abc" -> { database: "db", path: "mail/abc" } */
export function splitDocumentName(name) {
  const match = /^projects\/[^/]+\/databases\/([^/]+)\/documents\/(.+)$/.exec(name);
  if (!match || match[2].split("/").length % 2 !== 0 || match[2].split("/").includes("")) {
    throw new InvalidPathError(`invalid document name ${JSON.stringify(name)}`);
  }
  return { database: match[1], path: match[2] };
}

const toMicros = (date) => date.getTime() * 1000;

export class DocumentStore {
  constructor(state) {
    this.state = state;
  }

  /** The package's document object (created empty if unknown). */
  documentAt(name) {
    splitDocumentName(name);
    return this.state.getDocument(name);
  }

  /** An immutable view: { name, exists, fields, createMicros, updateMicros }. */
  snapshot(name) {
    const doc = this.documentAt(name);
    const { metadata } = doc;
    if (!metadata.hasExist) return { name, exists: false, fields: {}, createMicros: 0, updateMicros: 0 };
    return {
      name,
      exists: true,
      fields: doc.fields,
      createMicros: metadata.createMicros ?? toMicros(metadata.createdAt),
      updateMicros: metadata.updateMicros ?? toMicros(metadata.updatedAt),
    };
  }

  /** Replace a document's state with snapshot `next` and notify the package's listeners. */
  replace(next) {
    const doc = this.documentAt(next.name);
    const existed = doc.metadata.hasExist;
    if (next.exists) {
      doc.metadata = {
        hasExist: true,
        createdAt: new Date(Math.floor(next.createMicros / 1000)),
        updatedAt: new Date(Math.floor(next.updateMicros / 1000)),
        createMicros: next.createMicros,
        updateMicros: next.updateMicros,
      };
      doc.fields = next.fields;
    } else {
      doc.metadata = { hasExist: false, createdAt: null, updatedAt: null };
      doc.fields = {};
    }
    const event = !next.exists ? "delete-document" : existed ? "update-document" : "create-document";
    this.state.emitter.emit(event, { document: doc });
  }
}

/** The google.firestore.v1.Document message for a snapshot, exactly as reads return it. */
export function snapshotToDocument(snapshot, fields = snapshot.fields) {
  return Document.fromObject({
    name: snapshot.name,
    fields: Object.fromEntries(Object.entries(fields).map(([key, field]) => [key, field.toV1ValueObject()])),
    create_time: microsToTimestamp(snapshot.createMicros),
    update_time: microsToTimestamp(snapshot.updateMicros),
  });
}

/**
 * Patches on the package's document class, used by its query and listener code:
 * - toV1Document: real Firestore reports microsecond create/update times, the package milliseconds.
 * - getField: real Firestore filters and orders on nested paths ("delivery.state") and on
 *   __name__; the package throws "Not implemented" for a dotted path.
 */
export function patchDocumentClass() {
  FirestoreStateDocument.prototype.toV1Document = function toV1Document() {
    if (!this.metadata.hasExist) return Document.fromObject({ name: this.getPath(), fields: {} });
    const { metadata } = this;
    return snapshotToDocument({
      name: this.getPath(),
      fields: this.fields,
      createMicros: metadata.createMicros ?? toMicros(metadata.createdAt),
      updateMicros: metadata.updateMicros ?? toMicros(metadata.updatedAt),
    });
  };
  FirestoreStateDocument.prototype.getField = function getField(path) {
    if (path === "__name__") return makeReferenceField(this.getPath());
    return getAt(this.fields, parseFieldPath(path));
  };
}
