"""Property-based API test: requests generated from the app's own OpenAPI schema never cause a 5xx.

schemathesis' pytest plugin does not run under this pytest, so each operation's Hypothesis strategy
is driven directly; the list of operations is checked against the schema so none is left out.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from search.fakes import FakeModel

from faceattr.serve import create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install 'faceattr[dev]')")

OPERATIONS = [
    "GET /healthz",
    "GET /info",
    "POST /predict",
    "POST /explain",
    "GET /search",
    "POST /search/like",
    "GET /image/{face_id}",
    "GET /image/{face_id}/full",
    "GET /samples/{name}",
]


@pytest.fixture(params=[False, True], ids=["no-age", "age"])
def api_schema(request: pytest.FixtureRequest) -> Any:
    """The app's OpenAPI schema, loaded over ASGI (no sockets), with a small upload limit; once with a
    model and index without ages, once with ones that have them."""
    age = request.param
    index = request.getfixturevalue("aged_index" if age else "indexed")[1]
    app = create_app(FakeModel(age=age), index, max_upload_bytes=200_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    assert sorted(r.ok().label for r in api_schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_errors(api_schema: Any, label: str) -> None:
    from schemathesis.checks import not_a_server_error

    (op,) = [r.ok() for r in api_schema.get_all_operations() if r.ok().label == label]
    seen: list[int] = []

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=[not_a_server_error])
        seen.append(response.status_code)

    run()
    assert seen and max(seen) < 500
