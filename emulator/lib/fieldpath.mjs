// Firestore field paths: dot-separated segments; a segment that is not a plain identifier
// is wrapped in backticks, inside which \` and \\ are escapes.

/** Split a field path such as "delivery.startTime" or "`a.b`.c" into its segments. */
export function parseFieldPath(path) {
  const segments = [];
  let current = "";
  let quoted = false;
  let segmentStarted = false;
  for (let i = 0; i < path.length; i++) {
    const ch = path[i];
    if (quoted) {
      if (ch === "\\") {
        i++;
        if (i >= path.length) throw new Error(`field path ${JSON.stringify(path)} ends inside an escape`);
        current += path[i];
      } else if (ch === "`") {
        quoted = false;
      } else {
        current += ch;
      }
    } else if (ch === "`") {
      quoted = true;
      segmentStarted = true;
    } else if (ch === ".") {
      if (!segmentStarted) throw new Error(`field path ${JSON.stringify(path)} has an empty segment`);
      segments.push(current);
      current = "";
      segmentStarted = false;
    } else {
      current += ch;
      segmentStarted = true;
    }
  }
  if (quoted) throw new Error(`field path ${JSON.stringify(path)} has an unclosed backtick`);
  if (!segmentStarted) throw new Error(`field path ${JSON.stringify(path)} has an empty segment`);
  segments.push(current);
  return segments;
}
