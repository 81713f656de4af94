"""A scriptable OpenAI-compatible model server for the tests, run as its own process:

    python -m tests.mock_llm --port 8099

It speaks `POST /v1/chat/completions`, streamed (`data: {chunk}` lines, then `data: [DONE]`)
or not, and behaves as the test scripts it to. A behaviour is a JSON object:

    {"match": "a string the request's messages must contain",  # default: any request
     "stream": true | false,             # only streamed / only whole requests (default: either)
     "text": "the reply", "tokens": ["the", " reply"],  # deltas (default: the text, word by word)
     "delay_s": 0.0,                     # before each token
     "hang_s": 0.0,                      # before the response headers
     "status": 500,                      # fail with this HTTP status instead
     "die_after": 2,                     # after 2 tokens, drop the connection mid-body
     "stall_after": 2, "stall_s": 30,    # after 2 tokens, go silent for 30 s
     "error_after": 2,                   # after 2 tokens, send an error object in the stream
     "finish_reason": "stop", "times": 1}

Control endpoints: `POST /_script` queues behaviours (`{"behaviours": [...]}`), each used by
the first `times` requests it matches; unmatched requests get a plain default reply.
`GET /_requests?match=...` lists the requests seen, with their full bodies and how each ended:
`completed`, `cancelled` (the client went away first, with the time it noticed), `failed`
(a scripted status) or `dropped` (a scripted mid-stream drop). `POST /_reset` forgets it all.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from typing import Any

import uvicorn
from starlette.types import Message, Receive, Scope, Send

DEFAULT_REPLY = "This is the mock model's answer, from the first source [1]."


class Dropped(Exception):
    """Raised to make the server drop a connection mid-body, as a crashing model server does."""


class MockModel:
    def __init__(self) -> None:
        self.behaviours: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def take(self, body: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(body.get("messages", []), ensure_ascii=False)
        streamed = bool(body.get("stream"))
        for behaviour in self.behaviours:
            if behaviour.get("match") and behaviour["match"] not in text:
                continue
            if behaviour.get("stream") is not None and behaviour["stream"] != streamed:
                continue
            behaviour["times"] = behaviour.get("times", 1) - 1
            if behaviour["times"] <= 0:
                self.behaviours.remove(behaviour)
            return behaviour
        return {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        body = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        if (method, path) == ("POST", "/v1/chat/completions"):
            await self.completion(json.loads(body), receive, send)
        elif (method, path) == ("POST", "/_script"):
            payload = json.loads(body)
            self.behaviours.extend(payload.get("behaviours", [payload]))
            await _json(send, 200, {"queued": len(self.behaviours)})
        elif (method, path) == ("GET", "/_requests"):
            query = dict(
                part.split("=", 1) for part in scope["query_string"].decode().split("&") if part
            )
            match = _unquote(query.get("match", ""))
            seen = [r for r in self.requests if match in json.dumps(r["body"], ensure_ascii=False)]
            await _json(send, 200, {"requests": seen})
        elif (method, path) == ("POST", "/_reset"):
            self.behaviours.clear()
            self.requests.clear()
            await _json(send, 200, {"reset": True})
        elif (method, path) == ("GET", "/_health"):
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})

    async def completion(self, body: dict[str, Any], receive: Receive, send: Send) -> None:
        behaviour = self.take(body)
        record: dict[str, Any] = {
            "id": next(self._ids),
            "stream": bool(body.get("stream")),
            "body": body,
            "behaviour": behaviour,
            "outcome": "open",
            "started": time.time(),
            "ended": None,
            "tokens_sent": 0,
        }
        self.requests.append(record)
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            if await _wait_or_gone(gone, behaviour.get("hang_s", 0)):
                return _end(record, "cancelled")
            if behaviour.get("status"):
                error = {"error": {"message": "scripted failure", "type": "server_error"}}
                await _json(send, int(behaviour["status"]), error)
                return _end(record, "failed")
            if record["stream"]:
                await self.stream(body, behaviour, record, gone, send)
            else:
                await _json(send, 200, _whole(body, behaviour))
                _end(record, "completed")
        finally:
            watcher.cancel()

    async def stream(
        self,
        body: dict[str, Any],
        behaviour: dict[str, Any],
        record: dict[str, Any],
        gone: asyncio.Event,
        send: Send,
    ) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = _chunker(body, record["id"])
        await _event(send, chunk({"role": "assistant", "content": ""}, None))
        tokens = behaviour.get("tokens") or _words(behaviour.get("text", DEFAULT_REPLY))
        for i, token in enumerate(tokens):
            if i == behaviour.get("die_after"):
                _end(record, "dropped")
                raise Dropped("scripted mid-stream drop")
            if i == behaviour.get("error_after"):
                await _event(send, {"error": {"message": "scripted", "type": "server_error"}})
                await _finish(send)
                return _end(record, "failed")
            if i == behaviour.get("stall_after") and await _wait_or_gone(
                gone, behaviour.get("stall_s", 30)
            ):
                return _end(record, "cancelled")
            if await _wait_or_gone(gone, behaviour.get("delay_s", 0)):
                return _end(record, "cancelled")
            await _event(send, chunk({"content": token}, None))
            record["tokens_sent"] = i + 1
        await _event(send, chunk({}, behaviour.get("finish_reason", "stop")))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = _usage(body, tokens)
            await _event(send, {**chunk({}, None), "choices": [], "usage": usage})
        await _event(send, "[DONE]")
        await _finish(send)
        _end(record, "completed")


def _end(record: dict[str, Any], outcome: str) -> None:
    record["outcome"] = outcome
    record["ended"] = time.time()


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _wait_or_gone(gone: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if the client leaves; True if it left."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return gone.is_set()
    try:
        await asyncio.wait_for(gone.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _event(send: Send, payload: Any) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    message = {
        "type": "http.response.body",
        "body": f"data: {data}\n\n".encode(),
        "more_body": True,
    }
    await send(message)


async def _finish(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _chunker(body: dict[str, Any], request_id: int) -> Any:
    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-mock-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "mock"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    return chunk


def _whole(body: dict[str, Any], behaviour: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{"content": ""}]
    # Unscripted, a whole (non-streamed) request gets the last line of its last message back.
    default = (messages[-1].get("content") or "").strip().splitlines()[-1:] or [""]
    text = behaviour.get("text", default[0])
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": behaviour.get("finish_reason", "stop"),
            }
        ],
        "usage": _usage(body, _words(text)),
    }


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


def _usage(body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(tokens),
        "total_tokens": prompt + len(tokens),
    }


def _unquote(value: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(value)


class MockLLM:
    """The tests' handle on a running mock: script behaviours, read what it was sent."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def base_url(self) -> str:
        """What `DOCQA_LLM_BASE_URL` should be."""
        return f"{self.url}/v1"

    async def script(self, *behaviours: dict[str, Any]) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post("/_script", json={"behaviours": list(behaviours)})
            response.raise_for_status()

    async def requests(self, match: str = "") -> list[dict[str, Any]]:
        import httpx

        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get("/_requests", params={"match": match})
            response.raise_for_status()
            seen: list[dict[str, Any]] = response.json()["requests"]
            return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(MockModel(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
