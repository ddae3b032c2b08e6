// Server-assigned times, in integer microseconds since the epoch.
// Real Firestore hands out microsecond commit times and never gives two commits of one
// document the same update_time; update_time preconditions depend on that.

const startEpochMicros = Date.now() * 1000;
const startHr = process.hrtime.bigint();

let lastMicros = 0;

/** A commit time strictly greater than every earlier one. */
export function nextCommitMicros() {
  const elapsed = Number((process.hrtime.bigint() - startHr) / 1000n);
  const candidate = startEpochMicros + elapsed;
  lastMicros = candidate > lastMicros ? candidate : lastMicros + 1;
  return lastMicros;
}

/** The current time without reserving it (for read_time fields). */
export function nowMicros() {
  const elapsed = Number((process.hrtime.bigint() - startHr) / 1000n);
  return Math.max(startEpochMicros + elapsed, lastMicros);
}

export function microsToTimestamp(micros) {
  const seconds = Math.floor(micros / 1e6);
  return { seconds, nanos: (micros - seconds * 1e6) * 1000 };
}

/** Exact microseconds of a protobuf Timestamp, or NaN when it has sub-microsecond digits. */
export function timestampToMicros(timestamp) {
  const nanos = timestamp.nanos ?? 0;
  if (nanos % 1000 !== 0) return Number.NaN;
  return Number(timestamp.seconds ?? 0) * 1e6 + nanos / 1000;
}

/** RFC 3339 with microseconds, as Firestore prints commit times. */
export function microsToRfc3339(micros) {
  const { seconds, nanos } = microsToTimestamp(micros);
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  return `${base}.${String(nanos / 1000).padStart(6, "0")}Z`;
}
