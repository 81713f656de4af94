"""The S3-compatible blob store against a real S3 API server process (moto's, on loopback):
multipart uploads that hold one part, aborted and failed uploads that leave nothing, reads,
local copies for extraction, deletes; then the same through the scaled-out API, owner by owner.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from docqa.blobs import (
    BlobNotFound,
    LocalBlobStore,
    StorageUnavailable,
    make_blob_store,
    opened,
)
from docqa.s3blobs import MB, S3BlobStore, S3Location
from docqa.settings import Settings
from tests.cluster import Cluster, wait_ready
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.stack import ROOT, free_port, start_api

PIECE = 64 * 1024  # what the upload path hands the writer: one network read at a time


def padded_pdf(sample_pdf: Path, size: int) -> bytes:
    """A real PDF followed by PDF comment lines, `size` bytes in all: it spans several parts,
    and still reads as the same four pages (unique per call, so never a duplicate upload)."""
    data = bytearray(sample_pdf.read_bytes())
    data += f"% {uuid.uuid4().hex}\n".encode()
    line = 0
    while len(data) < size:
        data += b"%% padding line %08d so that the file spans several upload parts\n" % line
        line += 1
    return bytes(data[:size])


def s3_store(server: S3Server, bucket: str, scratch: Path, **kw: Any) -> S3BlobStore:
    return S3BlobStore(
        S3Location(bucket, "docqa"),
        scratch_dir=scratch,
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        **kw,
    )


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
async def store(s3_server: S3Server, bucket: str, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    opened = s3_store(s3_server, bucket, tmp_path / "scratch", part_size=5 * MB)
    yield opened
    await opened.aclose()


async def write_all(store: S3BlobStore, data: bytes, key: str) -> None:
    writer = store.writer()
    for start in range(0, len(data), PIECE):
        await writer.write(data[start : start + PIECE])
    await writer.commit(key)


async def test_a_large_upload_streams_in_parts_and_reads_back(
    store: S3BlobStore, s3_server: S3Server, bucket: str, sample_pdf: Path
) -> None:
    data = padded_pdf(sample_pdf, 13 * MB)  # three parts of 5 MB: two full, one short
    writer = store.writer()
    for start in range(0, 6 * MB, PIECE):
        await writer.write(data[start : start + PIECE])
    # One part is already in the bucket, as a pending multipart upload under tmp/, and nothing
    # is visible yet.
    [pending] = s3_server.pending_uploads(bucket)
    assert pending.startswith("docqa/tmp/")
    assert s3_server.keys(bucket) == []
    for start in range(6 * MB, len(data), PIECE):
        await writer.write(data[start : start + PIECE])
    await writer.commit("ab/large")
    assert s3_server.keys(bucket) == ["docqa/ab/large"]
    assert s3_server.pending_uploads(bucket) == []
    head = s3_server.client().head_object(Bucket=bucket, Key="docqa/ab/large")
    assert head["ContentLength"] == len(data)
    assert b"".join([chunk async for chunk in store.read("ab/large")]) == data


async def test_a_small_upload_is_one_request_to_its_key(
    store: S3BlobStore, s3_server: S3Server, bucket: str, sample_pdf: Path
) -> None:
    data = sample_pdf.read_bytes()
    writer = store.writer()
    for start in range(0, len(data), PIECE):
        await writer.write(data[start : start + PIECE])
    assert s3_server.pending_uploads(bucket) == []
    await writer.commit("cd/small")
    assert s3_server.keys(bucket) == ["docqa/cd/small"]
    assert await store.get("cd/small") == data


async def test_an_aborted_upload_leaves_no_object_and_no_parts(
    store: S3BlobStore, s3_server: S3Server, bucket: str, sample_pdf: Path
) -> None:
    data = padded_pdf(sample_pdf, 11 * MB)
    writer = store.writer()
    for start in range(0, len(data), PIECE):
        await writer.write(data[start : start + PIECE])
    assert len(s3_server.pending_uploads(bucket)) == 1
    await writer.abort()
    await writer.abort()  # safe twice, as upload error paths may do
    assert s3_server.pending_uploads(bucket) == []
    assert s3_server.keys(bucket) == []


async def test_a_commit_that_fails_leaves_nothing_after_abort(
    store: S3BlobStore, s3_server: S3Server, bucket: str, sample_pdf: Path
) -> None:
    data = padded_pdf(sample_pdf, 10 * MB)  # two full parts, both sent before the commit
    writer = store.writer()
    for start in range(0, len(data), PIECE):
        await writer.write(data[start : start + PIECE])
    # The server loses the upload (as a lifecycle rule or another client would end it), so
    # completing it fails.
    client = s3_server.client()
    [upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    with pytest.raises(StorageUnavailable) as info:
        await writer.commit("ef/lost")
    assert info.value.status_code == 503
    assert info.value.code == "storage_unavailable"
    await writer.abort()
    assert s3_server.keys(bucket) == []
    assert s3_server.pending_uploads(bucket) == []


async def test_local_copy_is_a_temporary_download(
    store: S3BlobStore, tmp_path: Path, sample_pdf: Path
) -> None:
    data = sample_pdf.read_bytes()
    await write_all(store, data, "gh/doc")
    async with store.local_copy("gh/doc") as path:
        assert path.parent == tmp_path / "scratch"
        assert path.read_bytes() == data
    assert not path.exists()
    with pytest.raises(BlobNotFound):
        async with store.local_copy("gh/missing"):
            pass
    assert list((tmp_path / "scratch").iterdir()) == []
    with pytest.raises(BlobNotFound):
        [chunk async for chunk in store.read("gh/missing")]


async def test_delete_removes_the_object_and_prefixes_remove_folders(
    store: S3BlobStore, s3_server: S3Server, bucket: str, sample_pdf: Path
) -> None:
    await write_all(store, sample_pdf.read_bytes(), "ij/doc")
    for width in (400, 800):
        await store.put(f"pages/ij/1-{width}.png", f"page at {width}".encode())
    await store.put("pages/kl/1-400.png", b"another document's page")
    assert await store.exists("pages/ij/1-400.png")
    assert await store.get("pages/ij/1-800.png") == b"page at 800"
    assert await store.get("pages/ij/2-800.png") is None
    await store.delete("ij/doc")
    await store.delete("ij/doc")  # already gone: not an error
    assert not await store.exists("ij/doc")
    await store.delete_prefix("pages/ij/")
    assert s3_server.keys(bucket) == ["docqa/pages/kl/1-400.png"]
    with pytest.raises(ValueError, match="ends with '/'"):
        await store.delete_prefix("pages/kl")
    with pytest.raises(ValueError, match="escapes"):
        await store.delete("../outside")


async def test_unreachable_storage_is_a_503_not_a_crash(tmp_path: Path) -> None:
    down = S3BlobStore(
        S3Location("nowhere", ""),
        scratch_dir=tmp_path,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    try:
        writer = down.writer()
        await writer.write(b"%PDF-1.7 a few bytes")
        with pytest.raises(StorageUnavailable, match="cannot be reached"):
            await writer.commit("mn/doc")
        await writer.abort()
        with pytest.raises(StorageUnavailable):
            await down.exists("mn/doc")
    finally:
        await down.aclose()


async def test_the_local_store_keeps_the_same_contract(tmp_path: Path, sample_pdf: Path) -> None:
    local = LocalBlobStore(tmp_path / "blobs")
    data = sample_pdf.read_bytes()
    writer = local.writer()
    await writer.write(data)
    await writer.commit("ab/doc")
    async with local.local_copy("ab/doc") as path:
        assert path == local.path("ab/doc")  # the file itself, no copy
    assert path.exists()
    assert b"".join([c async for c in await opened(local.read("ab/doc"))]) == data
    with pytest.raises(BlobNotFound) as info:
        await opened(local.read("ab/missing"))
    assert (info.value.status_code, info.value.code) == (404, "file_missing")
    with pytest.raises(BlobNotFound):
        async with local.local_copy("ab/missing"):
            pass
    await local.put("pages/ab/1-400.png", b"png")
    assert await local.get("pages/ab/1-400.png") == b"png"
    assert await local.get("pages/ab/2-400.png") is None
    await local.delete_prefix("pages/ab/")
    assert not await local.exists("pages/ab/1-400.png")
    await local.delete_prefix("")
    assert not await local.exists("ab/doc")
    assert [p.name for p in local.root.iterdir()] == ["tmp"]


def test_the_blob_url_picks_the_store(tmp_path: Path) -> None:
    local = make_blob_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore)
    assert local.root == (tmp_path / "blobs").resolve()
    elsewhere = make_blob_store(Settings(data_dir=tmp_path, blob_url=f"file://{tmp_path}/nfs"))
    assert isinstance(elsewhere, LocalBlobStore)
    assert elsewhere.root == (tmp_path / "nfs").resolve()
    s3 = make_blob_store(Settings(data_dir=tmp_path, blob_url="s3://my-bucket/docqa/blobs/"))
    assert isinstance(s3, S3BlobStore)
    assert s3.location == S3Location("my-bucket", "docqa/blobs")
    assert s3.part_size == 8 * MB
    assert s3.scratch_dir == tmp_path / "scratch"
    scoped = make_blob_store(Settings(data_dir=tmp_path, blob_url="s3://b"), scope="eval-1")
    assert isinstance(scoped, S3BlobStore)
    assert scoped.location == S3Location("b", "eval-1")
    with pytest.raises(ValueError, match=r"must be s3://bucket/prefix or file:///absolute/path"):
        make_blob_store(Settings(data_dir=tmp_path, blob_url="ftp://files.example/blobs"))
    for bad in ("s3:///no-bucket", "file://host/path", "s3://b/../x", "s3://b/p?versionId=1"):
        with pytest.raises(ValueError, match=r"s3://bucket/prefix|escapes"):
            make_blob_store(Settings(data_dir=tmp_path, blob_url=bad))
    with pytest.raises(ValueError, match="5120"):
        make_blob_store(Settings(data_dir=tmp_path, blob_url="s3://b", max_upload_mb=6000))


async def test_a_scoped_store_removes_only_its_own_folder(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, **_settings_env(s3_server, f"s3://{bucket}/p"))
    main = make_blob_store(settings)
    run = make_blob_store(settings, scope="eval-1")
    try:
        await main.put("ab/kept", b"kept")
        await run.put("ab/gone", b"gone")
        await run.delete_prefix("")
        assert s3_server.keys(bucket) == ["p/ab/kept"]
    finally:
        await main.aclose()
        await run.aclose()


def _settings_env(server: S3Server, url: str) -> dict[str, Any]:
    return {k.removeprefix("DOCQA_").lower(): v for k, v in server.env(url).items()}


# --- through the API: two owners on the scaled-out cluster with its blobs in S3 ---------------


def _blob_key(cluster: Cluster, owner_id: str, document_id: str) -> str:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute(
            "SELECT blob_key FROM documents WHERE owner_id = %s AND document_id = %s",
            (owner_id, document_id),
        ).fetchone()
    assert row is not None
    return f"blobs/{row[0]}"


async def test_upload_download_delete_and_owner_isolation_through_the_api(
    s3_cluster: Cluster, s3_server: S3Server, sample_pdf: Path
) -> None:
    bucket = s3_cluster.bucket
    assert bucket is not None
    alice, bob = await s3_cluster.new_key("alice"), await s3_cluster.new_key("bob")
    data = padded_pdf(sample_pdf, 13 * MB)  # above the 8 MB part size: a multipart upload
    base = s3_cluster.apis[0]
    async with (
        s3_cluster.client(base, alice.secret) as as_alice,
        s3_cluster.client(s3_cluster.apis[1], bob.secret) as as_bob,
    ):
        response = await as_alice.post(
            "/api/v1/upload", files={"file": ("padded.pdf", data, "application/pdf")}
        )
        assert response.status_code == 200, response.text
        doc_id = response.json()["document_id"]
        key = _blob_key(s3_cluster, alice.owner_id, doc_id)
        assert key in s3_server.keys(bucket, "blobs/")
        assert not s3_server.keys(bucket, "blobs/tmp/")
        assert s3_server.pending_uploads(bucket) == []
        # A worker with a data directory of its own read it from the bucket.
        await wait_ready(as_alice, doc_id)

        for response in (
            await as_bob.get(f"/api/v1/documents/{doc_id}/file"),
            await as_bob.delete(f"/api/v1/documents/{doc_id}"),
        ):
            assert response.status_code == 404
            assert response.json()["code"] == "document_not_found"
        assert key in s3_server.keys(bucket, "blobs/")

        async with s3_cluster.client(s3_cluster.apis[1], alice.secret) as other_api:
            download = await other_api.get(f"/api/v1/documents/{doc_id}/file")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/pdf"
        assert download.content == data

        assert (await as_alice.delete(f"/api/v1/documents/{doc_id}")).status_code == 204
        assert key not in s3_server.keys(bucket, "blobs/")
        assert (await as_alice.get(f"/api/v1/documents/{doc_id}/file")).status_code == 404


async def test_a_refused_upload_leaves_no_object_in_the_bucket(
    s3_cluster: Cluster, s3_server: S3Server, sample_pdf: Path
) -> None:
    bucket = s3_cluster.bucket
    assert bucket is not None
    key = await s3_cluster.new_key("refused")
    before = set(s3_server.keys(bucket))
    data = padded_pdf(sample_pdf, 13 * MB)  # two parts are in the bucket when it is refused
    async with s3_cluster.client(s3_cluster.apis[0], key.secret) as client:
        response = await client.post(
            "/api/v1/upload", files={"file": ("report.docx", data, "application/octet-stream")}
        )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_type"
    assert set(s3_server.keys(bucket)) == before
    assert s3_server.pending_uploads(bucket) == []


def test_compose_has_an_s3_profile_with_minio() -> None:
    from tests.test_deploy import _compose_command

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOCQA_", "POSTGRES_"))}
    env = clean | {
        "POSTGRES_PASSWORD": "compose-test-secret",
        "DOCQA_BLOB_URL": "s3://docqa/blobs",
        "DOCQA_S3_ENDPOINT_URL": "http://minio:9000",
        "DOCQA_S3_ACCESS_KEY_ID": "docqa",
        "DOCQA_S3_SECRET_ACCESS_KEY": "minio-test-secret",
    }
    result = subprocess.run(
        [*_compose_command(), "-f", str(ROOT / "docker-compose.yml"), "--profile", "s3", "config"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["minio"]["profiles"] == ["s3"]
    assert services["minio-init"]["profiles"] == ["s3"]
    for name in ("api", "worker", "migrate"):
        env_of = services[name]["environment"]
        assert env_of["DOCQA_BLOB_URL"] == "s3://docqa/blobs"
        assert env_of["DOCQA_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env_of["DOCQA_S3_SECRET_ACCESS_KEY"] == "minio-test-secret"
    minio_env = services["minio"]["environment"]
    assert minio_env["MINIO_ROOT_USER"] == "docqa"
    assert minio_env["MINIO_ROOT_PASSWORD"] == "minio-test-secret"


async def test_a_file_gone_from_the_bucket_is_a_404_and_an_outage_a_503(
    s3_cluster: Cluster, s3_server: S3Server, sample_pdf: Path, tmp_path: Path
) -> None:
    bucket = s3_cluster.bucket
    assert bucket is not None
    key = await s3_cluster.new_key("outage")
    async with s3_cluster.client(s3_cluster.apis[0], key.secret) as client:
        ids = []
        for _ in range(2):
            response = await client.post(
                "/api/v1/upload",
                files={"file": ("doc.pdf", padded_pdf(sample_pdf, 100_000), "application/pdf")},
            )
            assert response.status_code == 200, response.text
            ids.append(response.json()["document_id"])
        # Removed behind docqa's back: the download says so before it starts, as JSON.
        s3_server.client().delete_object(
            Bucket=bucket, Key=_blob_key(s3_cluster, key.owner_id, ids[0])
        )
        gone = await client.get(f"/api/v1/documents/{ids[0]}/file")
        assert gone.status_code == 404
        assert gone.json()["code"] == "file_missing"
        assert "blobs/" not in gone.text

    # Another API process on the same database, whose object storage does not answer.
    env = s3_cluster.procs["api-1"].env | {
        "DOCQA_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "DOCQA_DATA_DIR": str(tmp_path / "data"),
    }
    proc, url = start_api(env, tmp_path, "api-no-storage")
    try:
        async with s3_cluster.client(url, key.secret) as client:
            download = await client.get(f"/api/v1/documents/{ids[1]}/file")
            upload = await client.post(
                "/api/v1/upload", files={"file": ("new.txt", b"Some new text.", "text/plain")}
            )
        for response in (download, upload):
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["code"] == "storage_unavailable"
            assert (
                body["detail"]
                == "The file storage cannot be reached right now; please try again in a moment."
            )
            assert body["request_id"]
    finally:
        proc.stop()
    assert SECRET_KEY not in proc.log_path.read_text()
