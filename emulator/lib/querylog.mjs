// Every RunQuery the emulator received, reduced to its shape (collection, filter fields and
// operators, order, limit) without values. Real Firestore fails a query that no composite
// index covers; the emulator never does, so tests compare this log with the indexes the
// Pulumi program declares.

import {
  StructuredQueryCompositeFilterOperator as CompositeOp,
  StructuredQueryDirection as Direction,
  StructuredQueryFieldFilterOperator as FieldOp,
  StructuredQueryUnaryFilterOperator as UnaryOp,
} from "@firestore-emulator/proto/dist/google/firestore/v1/query.js";

const isAnd = (filter) => filter.filter_type === "composite_filter" && filter.composite_filter.op !== CompositeOp.OR;

/** ANDs (nested ones too) as one flat list, as Firestore plans them. */
function conjuncts(filter) {
  return isAnd(filter) ? filter.composite_filter.filters.flatMap(conjuncts) : [describeFilter(filter)];
}

/** One filter: {field, op}; an OR is {op: "OR", filters} (an AND inside it {op: "AND", filters}). */
function describeFilter(filter) {
  switch (filter.filter_type) {
    case "field_filter":
      return { field: filter.field_filter.field.field_path, op: FieldOp[filter.field_filter.op] };
    case "unary_filter":
      return { field: filter.unary_filter.field.field_path, op: UnaryOp[filter.unary_filter.op] };
    default:
      return isAnd(filter)
        ? { op: "AND", filters: conjuncts(filter) }
        : { op: "OR", filters: filter.composite_filter.filters.map(describeFilter) };
  }
}

/** The normalized record of one RunQuery request (see emulator/README.md). */
export function describeQuery(parent, query) {
  return {
    collection: query.from.length === 1 ? query.from[0].collection_id : query.from.map((f) => f.collection_id).join(","),
    parent,
    filters: query.has_where ? conjuncts(query.where) : [],
    orderBy: query.order_by.map((order) => ({
      field: order.field.field_path,
      direction: order.direction === Direction.DESCENDING ? "DESCENDING" : "ASCENDING",
    })),
    limit: query.has_limit ? query.limit.value : null,
  };
}

// A local stack sweeps every few seconds for as long as it runs; keep memory bounded there.
// Tests reset long before this; GET /queries reports drops in x-queries-dropped.
export const MAX_ENTRIES = 100_000;

export class QueryLog {
  #entries = [];
  dropped = 0;

  record(parent, query) {
    this.#entries.push(describeQuery(parent, query));
    if (this.#entries.length > MAX_ENTRIES) {
      this.#entries.splice(0, this.#entries.length - MAX_ENTRIES);
      this.dropped += 1;
    }
  }

  reset() {
    this.#entries = [];
    this.dropped = 0;
  }

  toJSON() {
    return this.#entries;
  }
}
