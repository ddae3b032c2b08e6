// Firestore's total order of values, used for order_by, cursors and range filters.
// Values of different types order by type (null < boolean < number < timestamp < string
// < bytes < reference < geo point < array < map); integers and doubles are one type
// compared by value, NaN first. Strings and map keys compare by their UTF-8 bytes (not
// JavaScript's UTF-16 order), references segment by segment, with numeric ids (__id7__)
// before string ids, as Firestore orders document keys.

const TYPE_ORDER = {
  null_value: 0,
  boolean_value: 1,
  integer_value: 2,
  double_value: 2,
  timestamp_value: 3,
  string_value: 4,
  bytes_value: 5,
  reference_value: 6,
  geo_point_value: 7,
  array_value: 8,
  map_value: 9,
};

export const typeOrder = (field) => TYPE_ORDER[field.type];

const primitive = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** Compare two strings by UTF-8 bytes, which is the order of their code points. */
export function compareUtf8(a, b) {
  if (a === b) return 0;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    // Within the BMP, or both surrogates, UTF-16 unit order is code point order; a
    // surrogate (an astral code point) sorts after every other BMP character.
    const xSurrogate = x >= 0xd800 && x <= 0xdfff;
    const ySurrogate = y >= 0xd800 && y <= 0xdfff;
    if (xSurrogate === ySurrogate) return primitive(x, y);
    return xSurrogate ? 1 : -1;
  }
  return primitive(a.length, b.length);
}

function compareNumbers(a, b) {
  if (Number.isNaN(a)) return Number.isNaN(b) ? 0 : -1;
  if (Number.isNaN(b)) return 1;
  return primitive(a, b);
}

function compareBytes(a, b) {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return primitive(a[i], b[i]);
  return primitive(a.length, b.length);
}

const NUMERIC_ID = /^__id(-?\d+)__$/;

/** Firestore's order of document ids: numeric ids (__id<n>__) by value first, then UTF-8. */
export function compareIds(a, b) {
  const x = NUMERIC_ID.exec(a);
  const y = NUMERIC_ID.exec(b);
  if (x && y) return primitive(BigInt(x[1]), BigInt(y[1]));
  if (x || y) return x ? -1 : 1;
  return compareUtf8(a, b);
}

/** Document names compare segment by segment (a parent before its children). */
export function compareReferences(a, b) {
  const x = a.split("/");
  const y = b.split("/");
  const length = Math.min(x.length, y.length);
  for (let i = 0; i < length; i++) {
    const c = compareIds(x[i], y[i]);
    if (c !== 0) return c;
  }
  return primitive(x.length, y.length);
}

function compareTimestamps(a, b) {
  return primitive(Number(a.seconds ?? 0), Number(b.seconds ?? 0)) || primitive(a.nanos ?? 0, b.nanos ?? 0);
}

function compareArrays(a, b) {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const c = compareValues(a[i], b[i]);
    if (c !== 0) return c;
  }
  return primitive(a.length, b.length);
}

function compareMaps(a, b) {
  const xKeys = Object.keys(a).sort(compareUtf8);
  const yKeys = Object.keys(b).sort(compareUtf8);
  const length = Math.min(xKeys.length, yKeys.length);
  for (let i = 0; i < length; i++) {
    const c = compareUtf8(xKeys[i], yKeys[i]) || compareValues(a[xKeys[i]], b[yKeys[i]]);
    if (c !== 0) return c;
  }
  return primitive(xKeys.length, yKeys.length);
}

/** -1, 0 or 1: how stored field `a` orders against `b` in Firestore. */
export function compareValues(a, b) {
  const byType = primitive(typeOrder(a), typeOrder(b));
  if (byType !== 0) return byType;
  switch (a.type) {
    case "null_value":
      return 0;
    case "boolean_value":
      return primitive(Number(a.value), Number(b.value));
    case "integer_value":
    case "double_value":
      return compareNumbers(a.value, b.value);
    case "timestamp_value":
      return compareTimestamps(a.value, b.value);
    case "string_value":
      return compareUtf8(a.value, b.value);
    case "bytes_value":
      return compareBytes(a.value, b.value);
    case "reference_value":
      return compareReferences(a.value, b.value);
    case "geo_point_value":
      return primitive(a.value.latitude, b.value.latitude) || primitive(a.value.longitude, b.value.longitude);
    case "array_value":
      return compareArrays(a.value, b.value);
    case "map_value":
      return compareMaps(a.value, b.value);
    default:
      return 0;
  }
}

const isNaNField = (field) => field.type === "double_value" && Number.isNaN(field.value);

/** Equality as `==`, `in` and array-contains test it: same type class, same value; NaN equals nothing. */
export function sameValue(a, b) {
  if (isNaNField(a) || isNaNField(b)) return false;
  return typeOrder(a) === typeOrder(b) && compareValues(a, b) === 0;
}

/** A range comparison matches only values of the operand's type class (a timestamp range never
 * matches null, strings or numbers); NaN is outside every range. */
export function inRange(field, operand, accept) {
  if (isNaNField(field) || isNaNField(operand)) return false;
  if (typeOrder(field) !== typeOrder(operand)) return false;
  return accept(compareValues(field, operand));
}
