"""Upload speed and memory with blobs in S3 (moto's server process on loopback) against the local
directory store, in the same run, the same way `bench_upload.py` times uploads.

1. Through the API: five 50 MB uploads to each store; wall time and the API process's RSS
   growth (peak during the upload minus before it).
   The API's RSS at rest (after one small upload, so the S3 client is loaded) is printed too.
2. The stores alone: 50 MB written in 64 KB pieces (what the upload path hands them), split into
   the time spent in `write` calls and in `commit` (for S3 above one part: completing the
   multipart upload, and the copy from tmp/ to the final key).

moto keeps objects in its own process's memory and answers from Python, so it is slower than
MinIO or S3 would be; the figures bound what the S3 client side costs, not what S3 does.

Run: .venv/bin/python benchmarks/bench_upload_s3.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, start_s3_server

from benchmarks.bench_upload import MB, RssSampler, multipart, settle
from benchmarks.common import bench_stack, summary
from docqa.blobs import LocalBlobStore
from docqa.s3blobs import S3BlobStore, S3Location

RUNS = 5
SIZE = 50 * MB
PIECE = 64 * 1024


async def through_api(label: str, body: bytes, boundary: str, **env: str) -> None:
    with bench_stack(worker=False, **env) as stack:
        assert stack.api.popen is not None
        await settle(stack.api.popen.pid)
        async with httpx.AsyncClient(base_url=stack.url, timeout=300) as client:
            await client.post(
                "/api/v1/upload", files={"file": ("w.txt", b"warm up text", "text/plain")}
            )
            times, growth = [], []
            at_rest = psutil.Process(stack.api.popen.pid).memory_info().rss / MB
            for i in range(RUNS):
                unique = body.replace(b"%PDF-1.7\n", f"%PDF-1.{i}\n".encode(), 1)
                sampler = RssSampler(stack.api.popen.pid)
                before = sum(
                    p.memory_info().rss for p in [sampler.proc, *sampler.proc.children(True)]
                )
                sampler.start()
                t0 = time.perf_counter()
                response = await client.post(
                    "/api/v1/upload",
                    content=unique,
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                )
                times.append(time.perf_counter() - t0)
                sampler.running = False
                sampler.join()
                assert response.status_code == 200, response.text
                growth.append((sampler.peak - before) / MB)
    print(f"{label:<22} s: {summary(times)}   ({SIZE / MB / min(times):.0f} MB/s best)")
    print(f"{label:<22} RSS growth MB: {summary(growth)}   (API at rest: {at_rest:.0f} MB)")


async def store_alone(label: str, store: LocalBlobStore | S3BlobStore, data: bytes) -> None:
    writes, commits = [], []
    for i in range(RUNS):
        writer = store.writer()
        t0 = time.perf_counter()
        for start in range(0, len(data), PIECE):
            await writer.write(data[start : start + PIECE])
        t1 = time.perf_counter()
        await writer.commit(f"bench/{i}")
        t2 = time.perf_counter()
        writes.append(t1 - t0)
        commits.append(t2 - t1)
        await store.delete(f"bench/{i}")
    print(f"{label:<22} write s: {summary(writes)}   commit s: {summary(commits)}")


async def main() -> None:
    payload = b"%PDF-1.7\n" + os.urandom(SIZE - 9 - 400)
    body, boundary = multipart(payload, "big.pdf")
    workdir = Path(tempfile.mkdtemp(prefix="docqa-bench-s3-"))
    server: S3Server = start_s3_server(workdir)
    try:
        bucket = server.new_bucket()
        print(f"== {SIZE // MB} MB upload over loopback, {RUNS} runs each ==")
        await through_api("local directory", body, boundary)
        await through_api("S3 (moto), 8 MB parts", body, boundary, **server.env(f"s3://{bucket}/b"))

        print(f"== the stores alone: {SIZE // MB} MB in 64 KB writes, then commit ==")
        await store_alone("local directory", LocalBlobStore(workdir / "blobs"), payload)
        s3 = S3BlobStore(
            S3Location(bucket, "alone"),
            scratch_dir=workdir / "scratch",
            endpoint_url=server.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
        try:
            await store_alone("S3 (moto), 8 MB parts", s3, payload)
        finally:
            await s3.aclose()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
