// Document field values, stored as the package's own field classes so that its query and
// listener code (which compares with instanceof) keeps working on what we write.

import { FirestoreState } from "@firestore-emulator/server";
import { Write } from "@firestore-emulator/proto/dist/google/firestore/v1/write.js";
import { DocumentTransformFieldTransformServerValue } from "@firestore-emulator/proto/dist/google/firestore/v1/write.js";

import { microsToTimestamp } from "./clock.mjs";
import { parseFieldPath } from "./fieldpath.mjs";

/**
 * The package does not export its field classes, and its other bundles hold different copies
 * of them; the only copies its queries accept are the ones its FirestoreState creates. So we
 * let a scratch state store one value of each type and take their constructors.
 */
function harvestFieldClasses() {
  const scratch = new FirestoreState();
  const name = "projects/harvest/databases/(default)/documents/c/d";
  const samples = {
    string_value: { string_value: "s" },
    null_value: { null_value: 0 },
    boolean_value: { boolean_value: true },
    integer_value: { integer_value: 1 },
    double_value: { double_value: 1.5 },
    timestamp_value: { timestamp_value: { seconds: 1, nanos: 0 } },
    bytes_value: { bytes_value: Uint8Array.from([1]) },
    reference_value: { reference_value: name },
    geo_point_value: { geo_point_value: { latitude: 1, longitude: 1 } },
    array_value: { array_value: { values: [] } },
    map_value: { map_value: { fields: {} } },
  };
  scratch.writeV1Document(new Date(), Write.fromObject({ update: { name, fields: samples } }));
  const stored = scratch.getDocument(name).fields;
  const classes = {};
  for (const type of Object.keys(samples)) {
    const field = stored[type];
    if (!field || field.type !== type) throw new Error(`cannot find the package's class for ${type}`);
    classes[type] = field.constructor;
  }
  return classes;
}

const FieldClass = harvestFieldClasses();

export const makeTimestampField = (micros) => new FieldClass.timestamp_value(microsToTimestamp(micros));
export const makeMapField = (record) => new FieldClass.map_value(record);
export const makeArrayField = (items) => new FieldClass.array_value(items);
export const makeNullField = () => new FieldClass.null_value();
export const makeReferenceField = (name) => new FieldClass.reference_value(name);

/** A google.firestore.v1.Value message -> a stored field. */
export function toField(value) {
  if (value.has_string_value) return new FieldClass.string_value(value.string_value);
  if (value.has_null_value) return new FieldClass.null_value();
  if (value.has_boolean_value) return new FieldClass.boolean_value(value.boolean_value);
  if (value.has_integer_value) return new FieldClass.integer_value(Number(value.integer_value));
  if (value.has_double_value) return new FieldClass.double_value(value.double_value);
  if (value.has_timestamp_value) {
    const { seconds, nanos } = value.timestamp_value;
    return new FieldClass.timestamp_value({ seconds: Number(seconds), nanos });
  }
  if (value.has_bytes_value) return new FieldClass.bytes_value(value.bytes_value);
  if (value.has_reference_value) return new FieldClass.reference_value(value.reference_value);
  if (value.has_geo_point_value) {
    const { latitude, longitude } = value.geo_point_value;
    return new FieldClass.geo_point_value({ latitude, longitude });
  }
  if (value.has_array_value) return new FieldClass.array_value(value.array_value.values.map(toField));
  if (value.has_map_value) return new FieldClass.map_value(toFieldRecord(value.map_value.fields));
  throw new Error("value has no type set");
}

/** A protobuf map<string, Value> -> a record of stored fields. */
export function toFieldRecord(protoMap) {
  const record = {};
  for (const [key, value] of protoMap.entries()) record[key] = toField(value);
  return record;
}

export function getAt(record, segments) {
  let current = record;
  for (let i = 0; i < segments.length - 1; i++) {
    const next = current[segments[i]];
    if (!next || next.type !== "map_value") return undefined;
    current = next.value;
  }
  return current[segments[segments.length - 1]];
}

/** A copy of record with field set at segments; non-map parents on the way become maps. */
export function setAt(record, segments, field) {
  const [head, ...rest] = segments;
  if (rest.length === 0) return { ...record, [head]: field };
  const child = record[head];
  const childRecord = child && child.type === "map_value" ? child.value : {};
  return { ...record, [head]: makeMapField(setAt(childRecord, rest, field)) };
}

/** A copy of record without the field at segments (unchanged if it is not there). */
export function deleteAt(record, segments) {
  const [head, ...rest] = segments;
  if (!(head in record)) return record;
  if (rest.length === 0) {
    const { [head]: _removed, ...kept } = record;
    return kept;
  }
  const child = record[head];
  if (child.type !== "map_value") return record;
  return { ...record, [head]: makeMapField(deleteAt(child.value, rest)) };
}

/** Only the given field paths of record (a DocumentMask projection). */
export function projectFields(record, fieldPaths) {
  let projected = {};
  for (const path of fieldPaths) {
    const segments = parseFieldPath(path);
    const field = getAt(record, segments);
    if (field !== undefined) projected = setAt(projected, segments, field);
  }
  return projected;
}

export function fieldRecordsEqual(a, b) {
  return makeMapField(a).eq(makeMapField(b));
}

const isNumber = (field) => field && (field.type === "integer_value" || field.type === "double_value");

function numericResult(value, preferInteger) {
  return preferInteger && Number.isInteger(value)
    ? new FieldClass.integer_value(value)
    : new FieldClass.double_value(value);
}

function transformedValue(current, transform, commitMicros) {
  switch (transform.transform_type) {
    case "set_to_server_value":
      if (transform.set_to_server_value !== DocumentTransformFieldTransformServerValue.REQUEST_TIME) {
        throw new Error(`field transform on ${transform.field_path}: unknown server value`);
      }
      return makeTimestampField(commitMicros);
    case "increment": {
      const operand = toField(transform.increment);
      if (!isNumber(operand)) throw new Error(`increment of ${transform.field_path}: operand is not a number`);
      if (!isNumber(current)) return operand;
      const bothIntegers = current.type === "integer_value" && operand.type === "integer_value";
      return numericResult(current.value + operand.value, bothIntegers);
    }
    case "maximum":
    case "minimum": {
      const operand = toField(transform[transform.transform_type]);
      if (!isNumber(operand)) throw new Error(`${transform.transform_type} of ${transform.field_path}: operand is not a number`);
      if (!isNumber(current)) return operand;
      const keepCurrent = transform.transform_type === "maximum"
        ? current.value >= operand.value
        : current.value <= operand.value;
      return keepCurrent ? current : operand;
    }
    case "append_missing_elements": {
      const items = current && current.type === "array_value" ? [...current.value] : [];
      for (const value of transform.append_missing_elements.values) {
        const field = toField(value);
        if (!items.some((item) => item.eq(field))) items.push(field);
      }
      return makeArrayField(items);
    }
    case "remove_all_from_array": {
      const removed = transform.remove_all_from_array.values.map(toField);
      const items = current && current.type === "array_value" ? current.value : [];
      return makeArrayField(items.filter((item) => !removed.some((field) => field.eq(item))));
    }
    default:
      throw new Error(`field transform on ${transform.field_path}: no transform type set`);
  }
}

/**
 * Apply one FieldTransform at its (possibly nested) path.
 * Returns the new record and the transform result Firestore reports back.
 */
export function applyFieldTransform(record, transform, commitMicros) {
  const segments = parseFieldPath(transform.field_path);
  const value = transformedValue(getAt(record, segments), transform, commitMicros);
  const isArrayOp = transform.transform_type === "append_missing_elements"
    || transform.transform_type === "remove_all_from_array";
  return { record: setAt(record, segments, value), result: isArrayOp ? makeNullField() : value };
}
