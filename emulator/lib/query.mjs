// RunQuery as real Firestore evaluates a StructuredQuery: filters (unary ones, nested AND/OR,
// nested fields, __name__), then the order (explicit order_by, inequality fields, __name__),
// then cursors, offset and limit. The package's own query code ignores unary filters, rejects
// nested composite filters, applies limit first, orders __name__ wrongly and ignores cursors;
// only its document storage is used here. What is not implemented is refused loudly.

import {
  StructuredQueryCompositeFilterOperator as CompositeOp,
  StructuredQueryDirection as Direction,
  StructuredQueryFieldFilterOperator as FieldOp,
  StructuredQueryUnaryFilterOperator as UnaryOp,
} from "@firestore-emulator/proto/dist/google/firestore/v1/query.js";

import { invalidArgument, unimplemented } from "./errors.mjs";
import { parseFieldPath } from "./fieldpath.mjs";
import { compareUtf8, compareValues, inRange, sameValue } from "./order.mjs";
import { toField } from "./values.mjs";

const NAME = "__name__";

const RANGE = {
  [FieldOp.LESS_THAN]: (c) => c < 0,
  [FieldOp.LESS_THAN_OR_EQUAL]: (c) => c <= 0,
  [FieldOp.GREATER_THAN]: (c) => c > 0,
  [FieldOp.GREATER_THAN_OR_EQUAL]: (c) => c >= 0,
};

// Filters that make a field an inequality field (Firestore orders by those implicitly).
const INEQUALITY_OPS = new Set([...Object.keys(RANGE).map(Number), FieldOp.NOT_EQUAL, FieldOp.NOT_IN]);
const INEQUALITY_UNARY_OPS = new Set([UnaryOp.IS_NOT_NULL, UnaryOp.IS_NOT_NAN]);

const arrayItems = (field) => (field.type === "array_value" ? field.value : []);

/** Real Firestore: a filter on __name__ compares document keys, so its operand must be a reference. */
function checkNameOperand(filter, operand) {
  const listOp = filter.op === FieldOp.IN || filter.op === FieldOp.NOT_IN;
  const values = listOp ? arrayItems(operand) : [operand];
  if ((listOp && operand.type !== "array_value") || values.some((value) => value.type !== "reference_value")) {
    throw invalidArgument("__key__ filter value must be a Key (filter __name__ with a DocumentReference)");
  }
}

function fieldFilterMatches(doc, filter, operand) {
  const field = doc.getField(filter.field.field_path);
  if (field === undefined) return false;
  switch (filter.op) {
    case FieldOp.EQUAL:
      return sameValue(field, operand);
    case FieldOp.NOT_EQUAL:
      return field.type !== "null_value" && !sameValue(field, operand);
    case FieldOp.LESS_THAN:
    case FieldOp.LESS_THAN_OR_EQUAL:
    case FieldOp.GREATER_THAN:
    case FieldOp.GREATER_THAN_OR_EQUAL:
      return inRange(field, operand, RANGE[filter.op]);
    case FieldOp.IN:
      return arrayItems(operand).some((item) => sameValue(field, item));
    case FieldOp.NOT_IN:
      return field.type !== "null_value" && !arrayItems(operand).some((item) => sameValue(field, item));
    case FieldOp.ARRAY_CONTAINS:
      return arrayItems(field).some((item) => sameValue(item, operand));
    case FieldOp.ARRAY_CONTAINS_ANY:
      return arrayItems(field).some((item) => arrayItems(operand).some((wanted) => sameValue(item, wanted)));
    default:
      throw unimplemented(`query filter operator ${filter.op} is not supported`);
  }
}

function unaryFilterMatches(doc, filter) {
  const field = doc.getField(filter.field.field_path);
  if (field === undefined) return false;
  const isNaN = field.type === "double_value" && Number.isNaN(field.value);
  switch (filter.op) {
    case UnaryOp.IS_NULL:
      return field.type === "null_value";
    case UnaryOp.IS_NOT_NULL:
      return field.type !== "null_value";
    case UnaryOp.IS_NAN:
      return isNaN;
    case UnaryOp.IS_NOT_NAN:
      return !isNaN && field.type !== "null_value";
    default:
      throw unimplemented(`query unary operator ${filter.op} is not supported`);
  }
}

/**
 * A filter compiled once per query: operands converted and checked up front, so a bad
 * operand fails the query even when the collection is empty, as in real Firestore.
 */
function compileFilter(filter) {
  switch (filter.filter_type) {
    case "field_filter": {
      const fieldFilter = filter.field_filter;
      const operand = toField(fieldFilter.value);
      if (fieldFilter.field.field_path === NAME) checkNameOperand(fieldFilter, operand);
      return (doc) => fieldFilterMatches(doc, fieldFilter, operand);
    }
    case "unary_filter":
      return (doc) => unaryFilterMatches(doc, filter.unary_filter);
    case "composite_filter": {
      const { op, filters } = filter.composite_filter;
      const compiled = filters.map(compileFilter);
      return op === CompositeOp.OR ? (doc) => compiled.some((f) => f(doc)) : (doc) => compiled.every((f) => f(doc));
    }
    default:
      return () => true;
  }
}

/** Field paths of every inequality filter (<, <=, >, >=, !=, not-in, is-not-null, is-not-nan). */
function inequalityFields(filter, found = new Set()) {
  if (filter.filter_type === "field_filter" && INEQUALITY_OPS.has(filter.field_filter.op)) {
    found.add(filter.field_filter.field.field_path);
  } else if (filter.filter_type === "unary_filter" && INEQUALITY_UNARY_OPS.has(filter.unary_filter.op)) {
    found.add(filter.unary_filter.field.field_path);
  } else if (filter.filter_type === "composite_filter") {
    for (const child of filter.composite_filter.filters) inequalityFields(child, found);
  }
  return found;
}

function compareFieldPaths(a, b) {
  const x = parseFieldPath(a);
  const y = parseFieldPath(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const c = compareUtf8(x[i], y[i]);
    if (c !== 0) return c;
  }
  return x.length - y.length;
}

/**
 * The order Firestore runs a query in: the explicit order_by, then every inequality field
 * not already ordered (by field path), then __name__; the added ones take the direction of
 * the last explicit order (ascending when there is none). [{ path, descending }]
 */
export function effectiveOrder(query) {
  const orders = query.order_by.map((order) => ({
    path: order.field.field_path,
    descending: order.direction === Direction.DESCENDING,
  }));
  const descending = orders.length > 0 && orders[orders.length - 1].descending;
  const ordered = new Set(orders.map((order) => order.path));
  const implicit = query.has_where ? [...inequalityFields(query.where)] : [];
  for (const path of implicit.sort(compareFieldPaths)) {
    if (!ordered.has(path) && path !== NAME) orders.push({ path, descending });
  }
  if (!ordered.has(NAME)) orders.push({ path: NAME, descending });
  return orders;
}

/** Compare two keyed rows (or a row against cursor values) over the first n orders. */
function compareKeys(orders, a, b, n = orders.length) {
  for (let i = 0; i < n; i++) {
    const c = compareValues(a[i], b[i]);
    if (c !== 0) return orders[i].descending ? -c : c;
  }
  return 0;
}

/** A Cursor message -> its values as stored fields, checked against the order like Firestore does. */
function compileCursor(cursor, orders, which) {
  const values = cursor.values.map(toField);
  if (values.length > orders.length) {
    throw invalidArgument(`${which} cursor has ${values.length} values but the query orders by only ${orders.length} fields`);
  }
  values.forEach((value, i) => {
    if (orders[i].path === NAME && value.type !== "reference_value") {
      throw invalidArgument(`${which} cursor value for __name__ must be a document reference`);
    }
  });
  return { values, before: cursor.before };
}

function checkSupported(query) {
  if (query.has_find_nearest) throw unimplemented("find_nearest (vector search) is not supported by this emulator");
  if (query.from.length !== 1 || query.from[0].all_descendants) {
    throw unimplemented("queries must select exactly one collection (collection group queries are not supported)");
  }
}

/** The package's documents matching a StructuredQuery, in result order. */
export function runStructuredQuery(state, parent, query) {
  checkSupported(query);
  const matches = query.has_where ? compileFilter(query.where) : () => true;
  const orders = effectiveOrder(query);
  const start = query.has_start_at ? compileCursor(query.start_at, orders, "start") : null;
  const end = query.has_end_at ? compileCursor(query.end_at, orders, "end") : null;

  const collection = state.getCollection(`${parent}/${query.from[0].collection_id}`);
  let rows = collection.getAllDocuments()
    .filter((doc) => doc.metadata.hasExist && matches(doc))
    .map((doc) => ({ doc, keys: orders.map((order) => doc.getField(order.path)) }))
    // Real Firestore leaves out documents that lack an order_by field.
    .filter((row) => row.keys.every((key) => key !== undefined));
  rows.sort((a, b) => compareKeys(orders, a.keys, b.keys));

  // start_at (before) keeps rows equal to the cursor, start_after drops them;
  // end_at keeps them, end_before (before) drops them.
  if (start) {
    rows = rows.filter((row) => {
      const c = compareKeys(orders, row.keys, start.values, start.values.length);
      return c > 0 || (c === 0 && start.before);
    });
  }
  if (end) {
    rows = rows.filter((row) => {
      const c = compareKeys(orders, row.keys, end.values, end.values.length);
      return c < 0 || (c === 0 && !end.before);
    });
  }
  if (query.offset) rows = rows.slice(query.offset);
  if (query.has_limit) rows = rows.slice(0, query.limit.value);
  return rows.map((row) => row.doc);
}
