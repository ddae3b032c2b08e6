// RunQuery's filtering. The package's own query code is kept for ordering (and for
// listeners), but it silently ignores unary filters (== None), rejects nested composite
// filters and applies limit before anything else; real Firestore does none of that.
// Cursors are refused loudly rather than ignored, so a pagination loop cannot spin.

import {
  StructuredQueryCompositeFilterOperator as CompositeOp,
  StructuredQueryFieldFilterOperator as FieldOp,
  StructuredQueryUnaryFilterOperator as UnaryOp,
} from "@firestore-emulator/proto/dist/google/firestore/v1/query.js";

import { unimplemented } from "./errors.mjs";
import { toField } from "./values.mjs";

const isNumber = (field) => field.type === "integer_value" || field.type === "double_value";

// Firestore compares integers and doubles by numeric value (1 == 1.0).
function same(a, b) {
  return isNumber(a) && isNumber(b) ? a.value === b.value : a.eq(b);
}

function ordered(field, operand, op) {
  if (isNumber(field) && isNumber(operand)) {
    const [x, y] = [field.value, operand.value];
    return { [FieldOp.LESS_THAN]: x < y, [FieldOp.LESS_THAN_OR_EQUAL]: x <= y,
      [FieldOp.GREATER_THAN]: x > y, [FieldOp.GREATER_THAN_OR_EQUAL]: x >= y }[op];
  }
  return { [FieldOp.LESS_THAN]: field.lt(operand), [FieldOp.LESS_THAN_OR_EQUAL]: field.lte(operand),
    [FieldOp.GREATER_THAN]: field.gt(operand), [FieldOp.GREATER_THAN_OR_EQUAL]: field.gte(operand) }[op];
}

function fieldFilterMatches(doc, filter) {
  const field = doc.getField(filter.field.field_path);
  if (field === undefined) return false;
  const operand = toField(filter.value);
  const arrayItems = (f) => (f.type === "array_value" ? f.value : []);
  switch (filter.op) {
    case FieldOp.EQUAL:
      return same(field, operand);
    case FieldOp.NOT_EQUAL:
      return field.type !== "null_value" && !same(field, operand);
    case FieldOp.LESS_THAN:
    case FieldOp.LESS_THAN_OR_EQUAL:
    case FieldOp.GREATER_THAN:
    case FieldOp.GREATER_THAN_OR_EQUAL:
      return ordered(field, operand, filter.op);
    case FieldOp.IN:
      return arrayItems(operand).some((item) => same(field, item));
    case FieldOp.NOT_IN:
      return field.type !== "null_value" && !arrayItems(operand).some((item) => same(field, item));
    case FieldOp.ARRAY_CONTAINS:
      return arrayItems(field).some((item) => same(item, operand));
    case FieldOp.ARRAY_CONTAINS_ANY:
      return arrayItems(field).some((item) => arrayItems(operand).some((wanted) => same(item, wanted)));
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

function matches(doc, filter) {
  switch (filter.filter_type) {
    case "field_filter":
      return fieldFilterMatches(doc, filter.field_filter);
    case "unary_filter":
      return unaryFilterMatches(doc, filter.unary_filter);
    case "composite_filter": {
      const { op, filters } = filter.composite_filter;
      return op === CompositeOp.OR ? filters.some((f) => matches(doc, f)) : filters.every((f) => matches(doc, f));
    }
    default:
      return true;
  }
}

/** The package's documents matching a StructuredQuery, in result order. */
export function runStructuredQuery(state, parent, query) {
  if (query.has_start_at || query.has_end_at) {
    throw unimplemented("query cursors (start_at/end_at, start_after/end_before) are not supported by this emulator");
  }
  if (query.has_find_nearest) throw unimplemented("find_nearest (vector search) is not supported by this emulator");
  if (query.from.length !== 1 || query.from[0].all_descendants) {
    throw unimplemented("queries must select exactly one collection (collection group queries are not supported)");
  }
  // Ordering only: filtering and limits are ours.
  const sorted = state.v1Query(parent, { from: query.from, order_by: query.order_by, has_where: false, has_limit: false });
  const orderFields = query.order_by.map((order) => order.field.field_path).filter((path) => path !== "__name__");
  let docs = sorted.filter((doc) =>
    (!query.has_where || matches(doc, query.where))
    // Real Firestore leaves out documents that lack an order_by field.
    && orderFields.every((path) => doc.getField(path) !== undefined));
  if (query.offset) docs = docs.slice(query.offset);
  if (query.has_limit) docs = docs.slice(0, query.limit.value);
  return docs;
}
