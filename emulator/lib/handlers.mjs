// Replacement gRPC handlers for the package's Firestore service. Each keeps serving what
// google-cloud-firestore sends (get, set, update, create, delete, batches, transactions,
// queries) and restores a real-Firestore behaviour the package lacks; see each handler.

import {
  BatchGetDocumentsResponse,
  BatchWriteResponse,
  BeginTransactionResponse,
  CommitResponse,
  ListDocumentsResponse,
  RunQueryResponse,
} from "@firestore-emulator/proto/dist/google/firestore/v1/firestore.js";
import { Document } from "@firestore-emulator/proto/dist/google/firestore/v1/document.js";
import { Empty } from "@firestore-emulator/proto/dist/google/protobuf/empty.js";
import { Timestamp } from "@firestore-emulator/proto/dist/google/protobuf/timestamp.js";

import { changeRecord } from "./changes.mjs";
import { microsToTimestamp, nextCommitMicros, nowMicros } from "./clock.mjs";
import { applyCommit, planCommit, targetName } from "./commit.mjs";
import { invalidArgument, notFound, toGrpcStatus, unimplemented } from "./errors.mjs";
import { runStructuredQuery } from "./query.mjs";
import { snapshotToDocument } from "./store.mjs";
import {
  assertReadsUnchanged,
  recordDocumentRead,
  recordQuery,
} from "./transactions.mjs";
import { projectFields } from "./values.mjs";

const SERVICE = "/google.firestore.v1.Firestore";

// Responses are built from message instances: the generated toObject() of a Value emits
// every member of its oneof, so a toObject/fromObject round trip would corrupt values.
const readTimestamp = () => Timestamp.fromObject(microsToTimestamp(nowMicros()));

function writeResultObject(result) {
  return {
    ...(result.updateMicros === null ? {} : { update_time: microsToTimestamp(result.updateMicros) }),
    transform_results: result.transformResults.map((field) => field.toV1ValueObject()),
  };
}

/** A read's document, limited to the request's DocumentMask when it has one. */
function documentFor(snapshot, request) {
  if (!request.has_mask) return snapshotToDocument(snapshot);
  return snapshotToDocument(snapshot, projectFields(snapshot.fields, request.mask.field_paths));
}

export function createHandlers({ state, store, transactions, stats, feed, queries }) {
  /**
   * The transaction a read runs in: an existing one, a new one (lazy begin), or none.
   * Returns { tx, newId } where newId is set when the read began it.
   */
  function readTransaction(request) {
    if (request.consistency_selector === "transaction") return { tx: transactions.lookup(request.transaction), newId: null };
    if (request.consistency_selector === "new_transaction") {
      const newId = transactions.begin(request.new_transaction);
      return { tx: transactions.lookup(newId), newId };
    }
    return { tx: null, newId: null };
  }

  const trackReads = (tx) => tx !== null && !tx.readOnly;

  /** Validate, plan and apply writes as one atomic commit; returns { commitMicros, plan }. */
  function commitAtomically(writes) {
    const commitMicros = nextCommitMicros();
    const plan = planCommit(store, writes, commitMicros);
    applyCommit(store, plan);
    stats.countCommit(writes.map(targetName));
    feed.publish(plan.changes.map((change) => changeRecord(change, commitMicros)));
    return { commitMicros, plan };
  }

  return {
    // Real Firestore: preconditions (exists and update_time) are enforced, a commit applies
    // all of its writes or none, a transaction whose reads changed is ABORTED.
    Commit(call, callback) {
      const { writes, transaction } = call.request;
      const inTransaction = transaction && transaction.length > 0;
      try {
        if (inTransaction) {
          const tx = transactions.lookup(transaction);
          if (tx.readOnly && writes.length > 0) throw invalidArgument("a read-only transaction cannot write");
          assertReadsUnchanged(tx, store);
        }
        const { commitMicros, plan } = commitAtomically(writes);
        callback(null, CommitResponse.fromObject({
          commit_time: microsToTimestamp(commitMicros),
          write_results: plan.results.map(writeResultObject),
        }));
      } catch (err) {
        callback(toGrpcStatus(err));
      } finally {
        if (inTransaction) transactions.finish(transaction);
      }
    },

    // Real Firestore: a transaction has a unique id and ends at commit or rollback
    // (the package hands every transaction the same dummy id).
    BeginTransaction(call, callback) {
      try {
        const id = transactions.begin(call.request.options);
        callback(null, BeginTransactionResponse.fromObject({ transaction: id }));
      } catch (err) {
        callback(toGrpcStatus(err));
      }
    },

    Rollback(call, callback) {
      transactions.finish(call.request.transaction);
      callback(null, new Empty());
    },

    // Real Firestore: reads inside a transaction count towards its conflict check, masks
    // project fields, and every returned (or missing) document is billed.
    BatchGetDocuments(call) {
      try {
        const request = call.request;
        const { tx, newId } = readTransaction(request);
        const snapshots = request.documents.map((name) => store.snapshot(name));
        const readTime = readTimestamp();
        if (newId) call.write(new BatchGetDocumentsResponse({ transaction: newId, read_time: readTime }));
        for (const snapshot of snapshots) {
          if (trackReads(tx)) recordDocumentRead(tx, snapshot);
          call.write(snapshot.exists
            ? new BatchGetDocumentsResponse({ found: documentFor(snapshot, request), read_time: readTime })
            : new BatchGetDocumentsResponse({ missing: snapshot.name, read_time: readTime }));
        }
        stats.countDocumentReads(request.documents);
        call.end();
      } catch (err) {
        call.emit("error", toGrpcStatus(err));
      }
    },

    // Not implemented by the package at all.
    GetDocument(call, callback) {
      try {
        const request = call.request;
        const { tx } = readTransaction(request);
        const snapshot = store.snapshot(request.name);
        if (trackReads(tx)) recordDocumentRead(tx, snapshot);
        stats.countDocumentReads([request.name]);
        if (!snapshot.exists) throw notFound(`Document "${request.name}" not found`);
        callback(null, documentFor(snapshot, request));
      } catch (err) {
        callback(toGrpcStatus(err));
      }
    },

    // Real Firestore: unary and nested filters, filters on nested fields and __name__, its
    // value order, cursors, offset, select, queries inside transactions (a changed result
    // aborts the commit), billed reads. Each request is logged for index checks.
    RunQuery(call) {
      try {
        const request = call.request;
        if (request.query_type !== "structured_query") throw invalidArgument("RunQuery needs a structured_query");
        const query = request.structured_query;
        queries.record(request.parent, query);
        if (request.has_explain_options) throw unimplemented("explain_options is not supported by this emulator");
        const { tx, newId } = readTransaction(request);
        const run = () => runStructuredQuery(state, request.parent, query).map((doc) => store.snapshot(doc.getPath()));
        const snapshots = run();
        if (trackReads(tx)) recordQuery(tx, run, snapshots);
        const readTime = readTimestamp();
        const selected = query.has_select
          ? query.select.fields.map((ref) => ref.field_path).filter((path) => path !== "__name__")
          : null;
        snapshots.forEach((snapshot, index) => {
          const fields = selected ? projectFields(snapshot.fields, selected) : snapshot.fields;
          call.write(new RunQueryResponse({
            document: snapshotToDocument(snapshot, fields),
            read_time: readTime,
            ...(index === 0 && newId ? { transaction: newId } : {}),
          }));
        });
        call.write(new RunQueryResponse({
          read_time: readTime,
          done: true,
          ...(snapshots.length === 0 && newId ? { transaction: newId } : {}),
        }));
        stats.countQuery(snapshots.map((snapshot) => snapshot.name));
        call.end();
      } catch (err) {
        call.emit("error", toGrpcStatus(err));
      }
    },

    // Not implemented by the package. Real Firestore applies each write on its own
    // (not atomically) and reports a status per write; one write per document.
    BatchWrite(call, callback) {
      try {
        const { writes } = call.request;
        const names = writes.map(targetName);
        if (new Set(names).size !== names.length) throw invalidArgument("BatchWrite allows one write per document");
        const statuses = [];
        const writeResults = [];
        for (const write of writes) {
          try {
            const { plan } = commitAtomically([write]);
            writeResults.push(writeResultObject(plan.results[0]));
            statuses.push({ code: 0, message: "" });
          } catch (err) {
            const status = toGrpcStatus(err);
            writeResults.push({});
            statuses.push({ code: status.code, message: status.details });
          }
        }
        callback(null, BatchWriteResponse.fromObject({ write_results: writeResults, status: statuses }));
      } catch (err) {
        callback(toGrpcStatus(err));
      }
    },

    // Not implemented by the package. Lists a collection's documents by name; with
    // show_missing, also documents that only have subcollections.
    ListDocuments(call, callback) {
      try {
        const request = call.request;
        const collection = state.getCollection(`${request.parent}/${request.collection_id}`);
        const all = collection.getAllDocuments()
          .filter((doc) => doc.metadata.hasExist || (request.show_missing && doc.hasChild()))
          .map((doc) => doc.getPath())
          .sort();
        const start = request.page_token ? all.findIndex((name) => name > request.page_token) : 0;
        const remaining = start < 0 ? [] : all.slice(start);
        const page = request.page_size > 0 ? remaining.slice(0, request.page_size) : remaining;
        const documents = page.map((name) => {
          const snapshot = store.snapshot(name);
          return snapshot.exists ? documentFor(snapshot, request) : new Document({ name });
        });
        stats.countDocumentReads(page.filter((name) => store.snapshot(name).exists));
        callback(null, new ListDocumentsResponse({
          documents,
          next_page_token: page.length < remaining.length ? page[page.length - 1] : "",
        }));
      } catch (err) {
        callback(toGrpcStatus(err));
      }
    },
  };
}

/** Swap the package's registered handlers for ours, keeping its (de)serializers. */
export function installHandlers(grpcServer, handlers) {
  for (const [method, handler] of Object.entries(handlers)) {
    const path = `${SERVICE}/${method}`;
    const registered = grpcServer.handlers.get(path);
    if (!registered) throw new Error(`the package registers no handler for ${path}`);
    grpcServer.unregister(path);
    grpcServer.register(path, handler, registered.serialize, registered.deserialize, registered.type);
  }
}
