"""A scriptable rerank server for the tests, run as its own process:

    python -m tests.mock_rerank --port 8098

It serves `POST /rerank` (also under `/v1` and `/v2`) in both shapes docqa speaks: a body with
`documents` (Cohere, Jina, vLLM, Infinity) gets `{"results": [{"index", "relevance_score"}]}`,
best first and cut to `top_n`; a body with `texts` (TEI) gets `[{"index", "score"}]`, best first.
Unscripted, a text scores the share of the query's words it holds, so the ranking means something
and is deterministic. A behaviour, queued with `POST /_script` (`{"behaviours": [...]}`), changes
that for the first `times` requests whose query contains `match`:

    {"match": "words of the query",  # default: any request
     "prefer": "a phrase",            # texts holding it score 1 more than the others
     "scores": [0.1, 0.9],           # exactly these scores, by index
     "hang_s": 5.0,                  # wait this long before answering
     "status": 503,                  # answer this HTTP status with a JSON error
     "body": "not json{",            # answer these raw bytes (status 200)
     "json": {"results": []},        # answer this JSON as it is
     "drop": true,                   # send the headers, then drop the connection
     "times": 1}

`GET /_requests` lists the requests seen: path, headers, body and how each ended (`answered`,
`cancelled` when the client left first, `failed`, `dropped`). `POST /_reset` forgets it all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")
_WORD = re.compile(r"[a-z0-9]+")
# Words too common to say anything about relevance.
_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by did do does for from how in is it its of on or the to was were "
        "what when where which who why with",
    )
)


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def overlap(query: str, text: str) -> float:
    """The share of the query's words that the text holds."""
    asked = words(query)
    return round(len(asked & words(text)) / len(asked), 6) if asked else 0.0


class Dropped(Exception):
    """Raised after the headers are sent, so that the server drops the connection."""


class MockRerank:
    def __init__(self) -> None:
        self.behaviours: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

    def take(self, query: str) -> dict[str, Any]:
        for behaviour in self.behaviours:
            if behaviour.get("match") and behaviour["match"] not in query:
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
        if method == "POST" and path in RERANK_PATHS:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            await self.rerank(path, headers, json.loads(body), receive, send)
        elif (method, path) == ("POST", "/_script"):
            payload = json.loads(body)
            self.behaviours.extend(payload.get("behaviours", [payload]))
            await _json(send, 200, {"queued": len(self.behaviours)})
        elif (method, path) == ("GET", "/_requests"):
            await _json(send, 200, {"requests": self.requests})
        elif (method, path) == ("POST", "/_reset"):
            self.behaviours.clear()
            self.requests.clear()
            await _json(send, 200, {"reset": True})
        elif (method, path) == ("GET", "/_health"):
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"detail": f"no route {method} {path}"})

    async def rerank(
        self,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        query = str(body.get("query", ""))
        behaviour = self.take(query)
        record: dict[str, Any] = {
            "path": path,
            "headers": headers,
            "body": body,
            "behaviour": behaviour,
            "outcome": "open",
            "started": time.time(),
        }
        self.requests.append(record)
        if behaviour.get("hang_s") and await _client_left(receive, behaviour["hang_s"]):
            record["outcome"] = "cancelled"
            return
        if behaviour.get("status"):
            record["outcome"] = "failed"
            return await _json(send, int(behaviour["status"]), {"detail": "scripted failure"})
        if behaviour.get("drop"):
            record["outcome"] = "dropped"
            start = {"type": "http.response.start", "status": 200, "headers": []}
            await send(start)
            raise Dropped("scripted drop")
        record["outcome"] = "answered"
        if "body" in behaviour:
            return await _raw(send, 200, str(behaviour["body"]).encode())
        if "json" in behaviour:
            return await _json(send, 200, behaviour["json"])
        texts = [str(t) for t in body.get("texts", body.get("documents", []))]
        scores = behaviour.get("scores") or [_score(query, t, behaviour) for t in texts]
        ranked = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
        if "texts" in body:  # TEI: a list, best first
            return await _json(send, 200, [{"index": i, "score": scores[i]} for i in ranked])
        top_n = int(body.get("top_n") or len(texts))
        results = [{"index": i, "relevance_score": scores[i]} for i in ranked[:top_n]]
        await _json(send, 200, {"id": f"mock-{len(self.requests)}", "results": results})


def _score(query: str, text: str, behaviour: dict[str, Any]) -> float:
    # Compared with whitespace folded: a PDF's text breaks lines inside phrases.
    prefer = behaviour.get("prefer")
    bonus = 1.0 if prefer and prefer in " ".join(text.split()) else 0.0
    return bonus + overlap(query, text)


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _client_left(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`, or less if the client disconnects first; True if it did."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _raw(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any) -> None:
    await _raw(send, status, json.dumps(payload).encode())


class MockRerankClient:
    """The tests' handle on a running mock: script behaviours, read what it was sent."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        import httpx

        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.request(method, path, json=payload)
            response.raise_for_status()
            return response.json()

    async def script(self, *behaviours: dict[str, Any]) -> None:
        await self._call("POST", "/_script", {"behaviours": list(behaviours)})

    async def requests(self) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = (await self._call("GET", "/_requests"))["requests"]
        return seen

    async def reset(self) -> None:
        await self._call("POST", "/_reset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(MockRerank(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
