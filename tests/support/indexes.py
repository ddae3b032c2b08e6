"""Firestore's composite-index requirement as pure functions: does a query need a composite index, and
which of the declared indexes serves it.

The emulator never enforces indexes; real Firestore (Standard edition) fails a query that no index
serves with FAILED_PRECONDITION. Tests pass the queries the function runs (recorded from the emulator or
written out) and the indexes the Pulumi program declares, so a missing or mis-ordered index fails here
and not on the first sweep in the cloud.

A query, normalized from a RunQuery StructuredQuery (op names are the proto enum names)::

    {"collection": "mail",                       # collection id or path; the last segment counts
     "allDescendants": False,                    # optional; True for a collection-group query
     "filters": [{"field": "delivery.state", "op": "IN"},
                 {"field": "delivery.nextAttemptTime", "op": "LESS_THAN_OR_EQUAL"}],
     "orderBy": [{"field": "delivery.nextAttemptTime", "direction": "ASCENDING"}],
     "limit": 50}

An index is either the plain form of ``infra.sweep.SWEEP_INDEXES`` (collection-scoped, for whatever
collection the query names)::

    (("delivery.state", "ASCENDING"), ("delivery.nextAttemptTime", "ASCENDING"))

or a ``gcp.firestore.Index``'s inputs as the Pulumi mock records them (then the collection and query
scope must match too)::

    {"collection": "mail", "queryScope": "COLLECTION",
     "fields": [{"fieldPath": "delivery.state", "order": "ASCENDING"}, {"fieldPath": "tags", "arrayConfig": "CONTAINS"}]}

The rules (Firestore's "Index types" and "Query with range and inequality filters on multiple fields"
pages, and StructuredQuery.order_by in google/firestore/v1/query.proto):

- Equality filters are EQUAL, IN, IS_NULL and IS_NAN (any direction in the index), and ARRAY_CONTAINS and
  ARRAY_CONTAINS_ANY (an ``arrayConfig: CONTAINS`` field). Every other operator is an inequality.
- The query's effective order is its explicit order-by (less fields it also filters by equality), then
  every inequality field not already ordered, in lexicographic order of the field path, in the direction
  of the last explicit order (ASCENDING if none), then ``__name__`` in that direction.
- Single-field indexes serve a query that names at most one field (``__name__`` aside), and a query
  with only equality filters and no order (or ``__name__`` ascending), by merging them. Anything else
  needs a composite index.
- A composite index serves the query when its fields are exactly the equality fields (in any order),
  then the ordered fields in order with the same directions, then ``__name__`` (implicit: Firestore
  appends it in the direction of the index's last field) in the query's ``__name__`` direction.
  Directions must match exactly: Firestore does not scan an index backwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

NAME = "__name__"
ASCENDING, DESCENDING, CONTAINS = "ASCENDING", "DESCENDING", "CONTAINS"
DIRECTIONS = (ASCENDING, DESCENDING)

VALUE_EQUALITY_OPS = frozenset({"EQUAL", "IN", "IS_NULL", "IS_NAN"})
ARRAY_OPS = frozenset({"ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"})
INEQUALITY_OPS = frozenset(
    {"NOT_EQUAL", "NOT_IN", "LESS_THAN", "LESS_THAN_OR_EQUAL", "GREATER_THAN", "GREATER_THAN_OR_EQUAL", "IS_NOT_NULL", "IS_NOT_NAN"}
)
OPS = VALUE_EQUALITY_OPS | ARRAY_OPS | INEQUALITY_OPS


@dataclass(frozen=True)
class IndexRequirement:
    """What an index must hold to serve one query."""

    collection: str  # collection id (last path segment)
    scope: str  # COLLECTION or COLLECTION_GROUP
    equality: Mapping[str, str]  # field -> "VALUE" (any direction) or CONTAINS
    ordered: tuple[tuple[str, str], ...]  # (field, direction), in order, __name__ excluded
    name_direction: str

    def suggested_index(self) -> tuple[tuple[str, str], ...]:
        """One index that would serve the query, in SWEEP_INDEXES' form (for error messages)."""
        equality = tuple((path, CONTAINS if kind == CONTAINS else ASCENDING) for path, kind in sorted(self.equality.items()))
        return equality + self.ordered


def _collection_id(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def requirement(query: Mapping[str, Any]) -> IndexRequirement:
    """The index requirement of a normalized query; ValueError for an unknown operator or direction."""
    equality: dict[str, str] = {}
    inequality: set[str] = set()
    for item in query.get("filters") or ():
        path, op = item["field"], item["op"]
        if op not in OPS:
            raise ValueError(f"unknown filter operator {op!r} on {path!r}; use the proto enum names ({', '.join(sorted(OPS))})")
        if path == NAME:
            continue  # a key filter is served by the __name__ every index ends with
        if op in INEQUALITY_OPS:
            inequality.add(path)
        else:
            equality[path] = CONTAINS if op in ARRAY_OPS else "VALUE"
    explicit: list[tuple[str, str]] = []
    for item in query.get("orderBy") or ():
        direction = item.get("direction", ASCENDING)
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r} for {item['field']!r}; use ASCENDING or DESCENDING")
        explicit.append((item["field"], direction))
    last = explicit[-1][1] if explicit else ASCENDING
    name_direction = next((direction for path, direction in explicit if path == NAME), last)
    ordered = [(path, direction) for path, direction in explicit if path != NAME and path not in equality]
    ordered += [(path, last) for path in sorted(inequality - {path for path, _ in ordered})]
    return IndexRequirement(
        collection=_collection_id(query["collection"]),
        scope="COLLECTION_GROUP" if query.get("allDescendants") else "COLLECTION",
        equality=equality,
        ordered=tuple(ordered),
        name_direction=name_direction,
    )


def needs_composite_index(query: Mapping[str, Any]) -> bool:
    """False when Firestore's automatic single-field indexes serve the query."""
    need = requirement(query)
    fields = set(need.equality) | {path for path, _ in need.ordered}
    if len(fields) <= 1:
        return False
    only_equality = not need.ordered and need.name_direction == ASCENDING
    return not only_equality


@dataclass(frozen=True)
class _Index:
    collection: Optional[str]  # None: the plain form, which names no collection
    scope: str
    fields: tuple[tuple[str, str], ...]  # (field, ASCENDING | DESCENDING | CONTAINS), __name__ excluded
    name_direction: str


def _normalize(index: Any) -> _Index:
    if isinstance(index, Mapping):
        fields: list[tuple[str, str]] = []
        for field in index["fields"]:
            path = field.get("fieldPath", field.get("field_path"))
            mode = field.get("order") or (CONTAINS if (field.get("arrayConfig") or field.get("array_config")) == CONTAINS else None)
            if path is None or mode is None:
                raise ValueError(f"cannot read index field {field!r}; expected fieldPath with order or arrayConfig CONTAINS")
            fields.append((path, mode))
        collection: Optional[str] = _collection_id(index["collection"])
        scope = index.get("queryScope", index.get("query_scope", "COLLECTION"))
    else:
        fields = [(path, mode) for path, mode in index]
        collection, scope = None, "COLLECTION"
    for path, mode in fields:
        if mode not in (*DIRECTIONS, CONTAINS):
            raise ValueError(f"index field {path!r} has mode {mode!r}; use ASCENDING, DESCENDING or CONTAINS")
    # Firestore appends __name__ in the direction of the last field, ASCENDING after an array field.
    others = [mode for path, mode in fields if path != NAME]
    implicit = others[-1] if others and others[-1] in DIRECTIONS else ASCENDING
    name_direction = next((mode for path, mode in fields if path == NAME), implicit)
    return _Index(collection, scope, tuple((path, mode) for path, mode in fields if path != NAME), name_direction)


def _serves(index: _Index, need: IndexRequirement) -> bool:
    if index.collection is not None and index.collection != need.collection:
        return False
    if index.scope != need.scope or index.name_direction != need.name_direction:
        return False
    size = len(need.equality)
    prefix, rest = index.fields[:size], index.fields[size:]
    if len(index.fields) != size + len(need.ordered) or {path for path, _ in prefix} != set(need.equality):
        return False
    for path, mode in prefix:
        if (mode == CONTAINS) != (need.equality[path] == CONTAINS):
            return False
    return rest == need.ordered


def index_covering(query: Mapping[str, Any], indexes: Iterable[Any]) -> Optional[Any]:
    """The first of `indexes` (returned as given) that serves the query as a composite index, or None.

    None does not by itself mean the query fails: see needs_composite_index."""
    need = requirement(query)
    return next((index for index in indexes if _serves(_normalize(index), need)), None)


def missing_index(query: Mapping[str, Any], indexes: Sequence[Any]) -> Optional[str]:
    """None when Firestore can run the query with these indexes; otherwise one line saying what to add."""
    if not needs_composite_index(query) or index_covering(query, indexes) is not None:
        return None
    need = requirement(query)
    fields = ", ".join(f"{path} {mode}" for path, mode in need.suggested_index())
    return (
        f"query on {need.collection} ({need.scope}) needs a composite index ({fields}, __name__ {need.name_direction}); "
        f"declared: {[_normalize(index).fields for index in indexes]}"
    )
