"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), against a
real server process: no 5xx, every response as the schema declares it (status, content type,
headers, body), every error body the contract's JSON, and `/healthz` still answering after.

The server is an API and a worker of the test's own, in keys mode on a database of its own: the
generated uploads and documents never meet other tests, and the auth checks mean something.
`DOCQA_FUZZ_EXAMPLES` sets the examples per operation (`make fuzz` runs many more).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from docqa.app import create_app
from docqa.settings import Settings
from tests.cluster import cli_create_key
from tests.stack import Proc, new_database, stack_env, start_api, start_worker

EXAMPLES = int(os.environ.get("DOCQA_FUZZ_EXAMPLES", "10"))
CALLS: Counter[str] = Counter()
FUZZ: dict[str, Any] = {}
_CODE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@pytest.fixture(scope="module")
def fuzz_api(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    url = new_database(pg_server_url, "docqa_fuzz")
    env = stack_env(
        url,
        folder / "data",
        DOCQA_AUTH="keys",
        DOCQA_RATE_ASKS_PER_MINUTE="0",
        DOCQA_RATE_UPLOADS_PER_MINUTE="0",
        DOCQA_RATE_CONCURRENT_STREAMS="0",
    )
    FUZZ["key"] = cli_create_key(env, "fuzz")
    procs: list[Proc] = [start_worker(env, folder, "fuzz-worker")]
    try:
        api, base_url = start_api(env, folder, "fuzz-api")
        procs.append(api)
        FUZZ["api"] = api
        yield base_url
    finally:
        for proc in reversed(procs):
            proc.stop()


# The schema is built from the app at import (schemathesis's fixture-based loader does not run
# on pytest 9); the first test checks it is exactly what the server serves.
SCHEMA_DOC = create_app(Settings(auth="keys")).openapi()
# docqa's own API. The OpenAI-compatible routes (/v1) answer errors in OpenAI's shape, not the
# contract's, and are left to their own tests.
schema = schemathesis.openapi.from_dict(SCHEMA_DOC).include(
    path_regex=r"^/(api/v1/|healthz|readyz)"
)


def test_fuzzed_schema_is_the_servers(fuzz_api: str) -> None:
    served = httpx.get(f"{fuzz_api}/openapi.json", timeout=10).json()
    assert served == SCHEMA_DOC


def error_body_is_the_contracts(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is `{"detail": <sentence>, "code": <snake_case>, "request_id"}`."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert {"detail", "code", "request_id"} <= set(body), body
    detail, code = body["detail"], body["code"]
    assert isinstance(detail, str), body
    assert len(detail) > 10, body
    assert detail.rstrip().endswith("."), f"not a sentence: {body}"
    assert isinstance(code, str), body
    assert _CODE.fullmatch(code), body
    assert body["request_id"] == response.headers.get("x-request-id", [None])[0], body
    return True


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_holds_its_schema_and_contract(case: Any, fuzz_api: str) -> None:
    CALLS[f"{case.method} {case.path}"] += 1
    case.call_and_validate(
        base_url=fuzz_api,
        headers={"Authorization": f"Bearer {FUZZ['key']}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            ignored_auth,
        ],
        additional_checks=[error_body_is_the_contracts],
        timeout=30,
    )


def test_server_still_answers_after_fuzzing(fuzz_api: str) -> None:
    print("fuzz examples per operation:", dict(sorted(CALLS.items())), "total", CALLS.total())
    assert CALLS.total() > 0, "the fuzz test ran no example"
    assert httpx.get(f"{fuzz_api}/healthz", timeout=10).status_code == 200
    api: Proc = FUZZ["api"]
    assert api.popen is not None, "the API was started"
    assert api.popen.poll() is None, api.log_tail()
    tracebacks = Path(api.log_path).read_text(errors="replace").count("Traceback")
    assert tracebacks == 0, api.log_tail(80)
