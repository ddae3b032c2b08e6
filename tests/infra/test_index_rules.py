"""tests/support/indexes.py: Firestore's composite-index rule, and the sweep's queries against SWEEP_INDEXES.

The emulator never enforces indexes, so these rules are what stands between a query that passes every
local test and FAILED_PRECONDITION on the first sweep in the cloud.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from infra.sweep import SWEEP_INDEXES
from tests.support.indexes import index_covering, missing_index, needs_composite_index, requirement

STATE, NEXT, LEASE = "delivery.state", "delivery.nextAttemptTime", "delivery.leaseExpireTime"
DUE_INDEX = ((STATE, "ASCENDING"), (NEXT, "ASCENDING"))
LAPSED_INDEX = ((STATE, "ASCENDING"), (LEASE, "ASCENDING"))


def query(filters: list[tuple[str, str]], order: Optional[list[tuple[str, str]]] = None, collection: str = "mail", **extra: Any) -> dict:
    return {
        "collection": collection,
        "filters": [{"field": field, "op": op} for field, op in filters],
        "orderBy": [{"field": field, "direction": direction} for field, direction in order or []],
        "limit": 50,
        **extra,
    }


# The sweep's queries as /work/plan8.md states them (functions/mailer/sweep.py runs these).
DUE = query([(STATE, "IN"), (NEXT, "LESS_THAN_OR_EQUAL")], [(NEXT, "ASCENDING")])
ASKED = query([(STATE, "IN"), (NEXT, "IS_NULL")])
LAPSED = query([(STATE, "EQUAL"), (LEASE, "LESS_THAN_OR_EQUAL")], [(LEASE, "ASCENDING")])


def test_the_declared_indexes_are_the_two_the_plan_names() -> None:
    assert SWEEP_INDEXES == (DUE_INDEX, LAPSED_INDEX)


@pytest.mark.parametrize(("sweep_query", "index"), [(DUE, DUE_INDEX), (ASKED, DUE_INDEX), (LAPSED, LAPSED_INDEX)], ids=["due", "asked", "lapsed"])
def test_each_sweep_query_is_served_by_a_declared_index(sweep_query: dict, index: tuple) -> None:
    assert index_covering(sweep_query, SWEEP_INDEXES) == index
    assert missing_index(sweep_query, SWEEP_INDEXES) is None


def test_the_due_and_lapsed_queries_would_fail_without_them() -> None:
    assert needs_composite_index(DUE) and needs_composite_index(LAPSED)
    assert index_covering(DUE, [LAPSED_INDEX]) is None
    assert index_covering(LAPSED, [DUE_INDEX]) is None
    message = missing_index(DUE, [LAPSED_INDEX])
    assert message is not None and f"{STATE} ASCENDING, {NEXT} ASCENDING, __name__ ASCENDING" in message
    # Two equality filters and no order: single-field indexes serve it, the composite one too.
    assert not needs_composite_index(ASKED)
    assert missing_index(ASKED, []) is None


SINGLE_FIELD_SERVES = [
    ("no filter at all", query([])),
    ("one equality", query([(STATE, "EQUAL")])),
    ("one range, ordered by it", query([(NEXT, "LESS_THAN")], [(NEXT, "DESCENDING")])),
    ("one field, IN and order", query([(STATE, "IN")], [(STATE, "DESCENDING")])),
    ("order only", query([], [(NEXT, "DESCENDING")])),
    ("not-equal alone", query([(STATE, "NOT_EQUAL")])),
    ("equalities merged", query([(STATE, "EQUAL"), ("to", "EQUAL"), ("tags", "ARRAY_CONTAINS"), (NEXT, "IS_NULL")])),
    ("equalities and __name__ ascending", query([(STATE, "IN"), ("to", "EQUAL")], [("__name__", "ASCENDING")])),
    ("backfill scan by key", query([("__name__", "GREATER_THAN")], [("__name__", "ASCENDING")])),
    ("one field and a key cursor filter", query([(STATE, "EQUAL"), ("__name__", "GREATER_THAN")])),
]


@pytest.mark.parametrize("served", [q for _, q in SINGLE_FIELD_SERVES], ids=[name for name, _ in SINGLE_FIELD_SERVES])
def test_queries_single_field_indexes_serve(served: dict) -> None:
    assert not needs_composite_index(served)
    assert missing_index(served, []) is None


NEEDS_COMPOSITE = [
    ("equality and order on another field", query([(STATE, "EQUAL")], [(NEXT, "ASCENDING")])),
    ("equality and range on another field", query([(STATE, "EQUAL"), (NEXT, "LESS_THAN")])),
    ("two ranges", query([(NEXT, "LESS_THAN"), (LEASE, "GREATER_THAN")])),
    ("range and order on another field", query([(NEXT, "LESS_THAN")], [(LEASE, "ASCENDING")])),
    ("two orders", query([], [(STATE, "ASCENDING"), (NEXT, "DESCENDING")])),
    ("equalities and __name__ descending", query([(STATE, "EQUAL"), ("to", "EQUAL")], [("__name__", "DESCENDING")])),
    ("array-contains and order", query([("tags", "ARRAY_CONTAINS")], [(NEXT, "ASCENDING")])),
    ("not-in and equality", query([(STATE, "NOT_IN"), ("to", "EQUAL")])),
    ("is-not-null and equality", query([(NEXT, "IS_NOT_NULL"), (STATE, "EQUAL")])),
]


@pytest.mark.parametrize("needs", [q for _, q in NEEDS_COMPOSITE], ids=[name for name, _ in NEEDS_COMPOSITE])
def test_queries_that_need_a_composite_index(needs: dict) -> None:
    assert needs_composite_index(needs)
    assert missing_index(needs, []) is not None


REFUSED = [
    ("fields in the wrong order", DUE, [((NEXT, "ASCENDING"), (STATE, "ASCENDING"))]),
    ("a field missing", DUE, [((STATE, "ASCENDING"),)]),
    ("the ordered field missing", DUE, [((NEXT, "ASCENDING"),)]),
    ("an extra field", DUE, [((STATE, "ASCENDING"), ("to", "ASCENDING"), (NEXT, "ASCENDING"))]),
    ("an extra trailing field", DUE, [((STATE, "ASCENDING"), (NEXT, "ASCENDING"), (LEASE, "ASCENDING"))]),
    ("the wrong direction", DUE, [((STATE, "ASCENDING"), (NEXT, "DESCENDING"))]),
    ("the wrong direction, asked for", query([(STATE, "IN")], [(NEXT, "DESCENDING")]), [DUE_INDEX]),
    ("__name__ in the wrong direction", DUE, [((STATE, "ASCENDING"), (NEXT, "ASCENDING"), ("__name__", "DESCENDING"))]),
    ("the other time field", DUE, [LAPSED_INDEX]),
    ("an array field indexed by value", query([("tags", "ARRAY_CONTAINS")], [(NEXT, "ASCENDING")]), [(("tags", "ASCENDING"), (NEXT, "ASCENDING"))]),
    ("a value field indexed as an array", DUE, [((STATE, "CONTAINS"), (NEXT, "ASCENDING"))]),
    ("inequality fields out of lexicographic order", query([(NEXT, "LESS_THAN"), (LEASE, "GREATER_THAN")]),
     [((NEXT, "ASCENDING"), (LEASE, "ASCENDING"))]),
    ("another collection", DUE, [{"collection": "outbox", "queryScope": "COLLECTION",
                                  "fields": [{"fieldPath": STATE, "order": "ASCENDING"}, {"fieldPath": NEXT, "order": "ASCENDING"}]}]),
    ("a collection-group query on a collection index", {**DUE, "allDescendants": True}, [DUE_INDEX]),
]


@pytest.mark.parametrize(("refused_query", "indexes"), [(q, i) for _, q, i in REFUSED], ids=[name for name, _, _ in REFUSED])
def test_indexes_that_do_not_serve_the_query_are_refused(refused_query: dict, indexes: list) -> None:
    assert needs_composite_index(refused_query)
    assert index_covering(refused_query, indexes) is None
    assert missing_index(refused_query, indexes) is not None


SERVED = [
    ("equality fields in any order", query([(STATE, "EQUAL"), ("to", "EQUAL")], [(NEXT, "ASCENDING")]),
     (("to", "DESCENDING"), (STATE, "ASCENDING"), (NEXT, "ASCENDING"))),
    ("a descending order and its __name__", query([(STATE, "EQUAL")], [(NEXT, "DESCENDING")]),
     ((STATE, "ASCENDING"), (NEXT, "DESCENDING"))),
    ("an explicit __name__ last", DUE, ((STATE, "DESCENDING"), (NEXT, "ASCENDING"), ("__name__", "ASCENDING"))),
    ("implicit inequality order: lexicographic", query([(NEXT, "LESS_THAN"), (LEASE, "GREATER_THAN")]),
     ((LEASE, "ASCENDING"), (NEXT, "ASCENDING"))),
    ("implicit order follows the last explicit direction", query([(STATE, "EQUAL"), (NEXT, "LESS_THAN")], [(LEASE, "DESCENDING")]),
     ((STATE, "ASCENDING"), (LEASE, "DESCENDING"), (NEXT, "DESCENDING"))),
    ("an order on an equality field adds nothing", query([(STATE, "EQUAL"), (NEXT, "LESS_THAN")], [(STATE, "ASCENDING"), (NEXT, "ASCENDING")]),
     DUE_INDEX),
    ("array-contains as CONTAINS", query([("tags", "ARRAY_CONTAINS_ANY")], [(NEXT, "ASCENDING")]),
     (("tags", "CONTAINS"), (NEXT, "ASCENDING"))),
    ("a nested collection path", query([(STATE, "IN"), (NEXT, "LESS_THAN_OR_EQUAL")], [(NEXT, "ASCENDING")], collection="tenants/acme/mail"),
     {"collection": "mail", "queryScope": "COLLECTION", "fields": [{"fieldPath": STATE, "order": "ASCENDING"}, {"fieldPath": NEXT, "order": "ASCENDING"}]}),
    ("a collection-group index for a collection-group query", {**DUE, "allDescendants": True},
     {"collection": "mail", "queryScope": "COLLECTION_GROUP", "fields": [{"fieldPath": STATE, "order": "ASCENDING"}, {"fieldPath": NEXT, "order": "ASCENDING"}]}),
]


@pytest.mark.parametrize(("served_query", "index"), [(q, i) for _, q, i in SERVED], ids=[name for name, _, _ in SERVED])
def test_indexes_that_serve_the_query(served_query: dict, index: Any) -> None:
    assert index_covering(served_query, [LAPSED_INDEX, index]) is index
    assert missing_index(served_query, [index]) is None


def test_the_effective_order_follows_the_query_proto_rules() -> None:
    # StructuredQuery.order_by: missing inequality fields are appended in lexicographic order, in the
    # direction of the last order given; __name__ last in that direction.
    need = requirement(query([("b", "GREATER_THAN"), ("a", "LESS_THAN"), ("c", "EQUAL")], [("z", "DESCENDING")]))
    assert need.ordered == (("z", "DESCENDING"), ("a", "DESCENDING"), ("b", "DESCENDING"))
    assert need.name_direction == "DESCENDING"
    assert dict(need.equality) == {"c": "VALUE"}
    assert need.suggested_index() == (("c", "ASCENDING"), ("z", "DESCENDING"), ("a", "DESCENDING"), ("b", "DESCENDING"))


def test_unknown_operators_and_directions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown filter operator '<='"):
        requirement(query([(NEXT, "<=")]))
    with pytest.raises(ValueError, match="unknown direction 'DESC'"):
        requirement(query([], [(NEXT, "DESC")]))
    with pytest.raises(ValueError, match="has mode 'UP'"):
        index_covering(DUE, [((STATE, "UP"),)])
