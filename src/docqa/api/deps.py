"""FastAPI dependencies, as `Annotated` aliases the views declare.

`Owner` scopes every query: with DOCQA_AUTH=keys it is the owner of the request's API key (401
without a valid one); with auth off it is the single local owner. The limit aliases apply the
per-key rate limits (no-ops with auth off):

    @router.post("/ask")
    async def ask(body: AskBody, state: State, owner: Owner, _: AskRateLimit, __: StreamSlot):
        ...
        return EventSourceResponse(stream())

`StreamSlot` holds one of the key's concurrent answer streams from before the endpoint runs
until the response has been sent in full (or the client went away): FastAPI runs the exit of a
request-scoped `yield` dependency after the response, streaming included.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from docqa.auth import LOCAL_OWNER, Principal, authenticate, credential_from_header
from docqa.metrics import ASK_STREAMS_ACTIVE
from docqa.ratelimit import Limiter
from docqa.state import AppState

__all__ = [
    "LOCAL_OWNER",
    "AskRateLimit",
    "Caller",
    "Owner",
    "State",
    "StreamSlot",
    "UploadRateLimit",
]


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.docqa
    return state


State = Annotated[AppState, Depends(get_state)]


# Declared for the OpenAPI document (its "Authorize" button); the header is read below, where
# HTTP Basic with the key as user name is accepted too.
_BEARER = HTTPBearer(auto_error=False, description="An API key (`docqa keys create`).")
_Documented = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


async def get_caller(request: Request, state: State, _bearer: _Documented) -> Principal:
    """Who is calling. Raises `Unauthorized` (401) in keys mode without a valid key."""
    if state.settings.auth != "keys":
        return Principal(owner_id=LOCAL_OWNER, key_id=None)
    checked = getattr(request.state, "principal", None)
    if isinstance(checked, Principal):
        return checked  # checked by `BodyGuard` before it read the body
    principal = await authenticate(
        state.db, credential_from_header(request.headers.get("authorization"))
    )
    request.state.key_id = principal.key_id  # for the request log line; never the key itself
    return principal


Caller = Annotated[Principal, Depends(get_caller)]


def get_owner(caller: Caller) -> str:
    """The owner every query is scoped to."""
    return caller.owner_id


Owner = Annotated[str, Depends(get_owner)]


async def limit_asks(caller: Caller, state: State) -> None:
    if caller.key_id is not None:
        await Limiter(state.db, state.settings).asks(caller.key_id)


async def limit_uploads(caller: Caller, state: State) -> None:
    if caller.key_id is not None:
        await Limiter(state.db, state.settings).uploads(caller.key_id)


async def hold_stream_slot(caller: Caller, state: State) -> AsyncIterator[None]:
    slot: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    if caller.key_id is not None:
        slot = Limiter(state.db, state.settings).stream(caller.key_id)
    async with slot:
        ASK_STREAMS_ACTIVE.inc()
        try:
            yield
        finally:
            ASK_STREAMS_ACTIVE.dec()


AskRateLimit = Annotated[None, Depends(limit_asks)]
UploadRateLimit = Annotated[None, Depends(limit_uploads)]
StreamSlot = Annotated[None, Depends(hold_stream_slot)]
