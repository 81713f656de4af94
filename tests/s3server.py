"""A real S3 API server for the tests: moto's standalone server as its own process on loopback.

`s3_server` (one per session) gives its endpoint; `S3Server.new_bucket()` makes an empty bucket,
so every test (and the S3 cluster) has a bucket of its own. `S3Server.env(url)` is the
environment a docqa process needs to use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import free_port

ACCESS_KEY = "docqa-test"
SECRET_KEY = "docqa-test-secret"


@dataclass
class S3Server:
    endpoint: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def env(self, blob_url: str) -> dict[str, str]:
        return {
            "DOCQA_BLOB_URL": blob_url,
            "DOCQA_S3_ENDPOINT_URL": self.endpoint,
            "DOCQA_S3_REGION": "us-east-1",
            "DOCQA_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "DOCQA_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def client(self) -> Any:
        """A plain boto3 client, to look at the bucket from outside docqa."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"docqa-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def pending_uploads(self, bucket: str) -> list[str]:
        uploads = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [u["Key"] for u in uploads]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start_s3_server(log_dir: Path) -> S3Server:
    port = free_port()
    log_path = log_dir / "moto-s3.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", popen, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"moto_server exited early:\n{log_path.read_text()[-2000:]}")
        try:
            # moto's own management endpoint: answers once the server takes requests.
            if httpx.get(f"{server.endpoint}/moto-api/data.json", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError("moto_server did not start")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log_dir = Path(os.environ.get("DOCQA_TEST_LOG_DIR") or tmp_path_factory.mktemp("s3-logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    server = start_s3_server(log_dir)
    yield server
    server.stop()
