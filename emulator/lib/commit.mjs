// The write path of Commit and BatchWrite, with real Firestore's semantics:
// - preconditions: `exists` (NOT_FOUND / ALREADY_EXISTS) and `update_time` (FAILED_PRECONDITION);
// - atomicity: every write of a commit is planned against a staged copy first, so a failing
//   write leaves the store untouched;
// - update masks: only masked paths change; a masked path absent from the data is deleted
//   (that is how DELETE_FIELD arrives), sibling fields of a map survive;
// - a set without a mask replaces the whole document;
// - field transforms (server timestamps, increments, ...) work on nested paths, in order;
// - a write that leaves the fields unchanged is a no-op: update_time stays, no change event.

import { timestampToMicros } from "./clock.mjs";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "./errors.mjs";
import { parseFieldPath } from "./fieldpath.mjs";
import {
  applyFieldTransform,
  deleteAt,
  fieldRecordsEqual,
  getAt,
  setAt,
  toFieldRecord,
} from "./values.mjs";

const missing = (name) => ({ name, exists: false, fields: {}, createMicros: 0, updateMicros: 0 });

export function targetName(write) {
  switch (write.operation) {
    case "update":
      return write.update.name;
    case "delete":
      return write.delete;
    case "transform":
      return write.transform.document;
    default:
      throw invalidArgument("write has no operation (update, delete or transform)");
  }
}

function checkPrecondition(write, current) {
  if (!write.has_current_document) return;
  const precondition = write.current_document;
  if (precondition.condition_type === "exists") {
    if (precondition.exists && !current.exists) throw notFound(`No document to update: ${current.name}`);
    if (!precondition.exists && current.exists) throw alreadyExists(`Document already exists: ${current.name}`);
  } else if (precondition.condition_type === "update_time") {
    if (!current.exists) {
      throw failedPrecondition(`update_time precondition failed: ${current.name} does not exist`);
    }
    if (timestampToMicros(precondition.update_time) !== current.updateMicros) {
      throw failedPrecondition(`update_time precondition failed: ${current.name} was updated since`);
    }
  }
}

function maskedFields(current, incoming, fieldPaths) {
  let fields = current.exists ? current.fields : {};
  for (const path of fieldPaths) {
    const segments = parseFieldPath(path);
    const value = getAt(incoming, segments);
    fields = value === undefined ? deleteAt(fields, segments) : setAt(fields, segments, value);
  }
  return fields;
}

function applyTransforms(fields, transforms, commitMicros) {
  const results = [];
  let record = fields;
  for (const transform of transforms) {
    const applied = applyFieldTransform(record, transform, commitMicros);
    record = applied.record;
    results.push(applied.result);
  }
  return { fields: record, results };
}

/** The document state after one write, and its transform results. */
function applyWrite(write, current, commitMicros) {
  if (write.operation === "delete") return { next: missing(current.name), transformResults: [] };
  let fields;
  let transforms;
  if (write.operation === "update") {
    const incoming = toFieldRecord(write.update.fields);
    fields = write.has_update_mask ? maskedFields(current, incoming, write.update_mask.field_paths) : incoming;
    transforms = write.update_transforms;
  } else {
    fields = current.exists ? current.fields : {};
    transforms = write.transform.field_transforms;
  }
  const transformed = applyTransforms(fields, transforms, commitMicros);
  return {
    next: { ...current, exists: true, fields: transformed.fields },
    transformResults: transformed.results,
  };
}

/**
 * Plan a commit without touching the store. Throws the first failing write's error.
 * Returns { changes: [{ before, after }] in first-write order, results: per write
 * { updateMicros | null, transformResults } }.
 */
export function planCommit(store, writes, commitMicros) {
  const staged = new Map();
  const planned = [];
  for (const write of writes) {
    const name = targetName(write);
    let entry = staged.get(name);
    if (!entry) {
      const before = store.snapshot(name);
      entry = { before, current: before };
      staged.set(name, entry);
    }
    checkPrecondition(write, entry.current);
    const { next, transformResults } = applyWrite(write, entry.current, commitMicros);
    entry.current = next;
    planned.push({ entry, isDelete: write.operation === "delete", transformResults });
  }

  const changes = [];
  for (const entry of staged.values()) {
    const { before, current } = entry;
    const unchanged = before.exists === current.exists
      && (!current.exists || fieldRecordsEqual(before.fields, current.fields));
    if (unchanged) {
      entry.final = before;
      continue;
    }
    entry.final = current.exists
      ? { ...current, createMicros: before.exists ? before.createMicros : commitMicros, updateMicros: commitMicros }
      : missing(current.name);
    changes.push({ before, after: entry.final });
  }

  const results = planned.map(({ entry, isDelete, transformResults }) => ({
    updateMicros: isDelete || !entry.final.exists ? null : entry.final.updateMicros,
    transformResults,
  }));
  return { changes, results };
}

/** Make a planned commit visible, all documents in one synchronous step. */
export function applyCommit(store, plan) {
  for (const { after } of plan.changes) store.replace(after);
}
