"""API keys and owners: create, list, revoke, and turn a request's credentials into an owner.

A key is `dq_` followed by 32 random bytes (URL-safe base64), shown once when it is created. The
database keeps only its SHA-256. A fast unsalted hash is the right tool here, unlike for
passwords: a key carries 256 bits of entropy, so no dictionary or brute-force search of the hash
can find it, and a slow hash (bcrypt, argon2) would only add tens of milliseconds of CPU to
every request. Looking the key up by its hash also means no secret is ever compared in Python.
Nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

from sqlalchemy import exists, func, select, update

from docqa.db.engine import Database
from docqa.db.models import ApiKey, Owner
from docqa.errors import DocqaError, Unauthorized

KEY_PREFIX = "dq_"
LOCAL_OWNER = "local"
# `last_used_at` is written at most this often per key, so that reads stay reads.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
_MAX_CREDENTIAL_CHARS = 512


class UnknownOwner(DocqaError):
    status_code = 404
    code = "owner_not_found"


class UnknownKey(DocqaError):
    status_code = 404
    code = "key_not_found"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner every query is scoped to, and the key used (None when off)."""

    owner_id: str
    key_id: str | None


@dataclass(frozen=True)
class NewKey:
    id: str
    owner_id: str
    name: str
    secret: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    owner_id: str
    owner_name: str
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_mode(configured: str | None, host: str) -> str:
    """The auth mode for a server bound to `host`; raises when that combination is unsafe."""
    if is_loopback(host):
        return configured or "off"
    if configured == "off":
        raise ValueError(
            f"DOCQA_AUTH=off is only allowed on a loopback address, and {host} is reachable "
            "from other machines. Set DOCQA_AUTH=keys (and create a key with "
            "`docqa keys create --name NAME`), or bind 127.0.0.1."
        )
    return "keys"


NO_KEYS_SENTENCE = (
    "docqa will not start: DOCQA_AUTH=keys (required when binding a non-loopback address) "
    "but no API key exists yet, so nobody could use this server. Create one with "
    "`docqa keys create --name NAME` against the same database, then start again."
)


def credential_from_header(authorization: str | None) -> str | None:
    """The API key in an `Authorization` header: `Bearer <key>`, or HTTP Basic with the key as
    user name or password (`curl -u KEY:`, or a URL like `http://KEY@host/`)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not value or len(value) > _MAX_CREDENTIAL_CHARS:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or password or None
    return None


async def authenticate(db: Database, credential: str | None) -> Principal:
    """The principal a key belongs to; raises `Unauthorized` when it is missing or not valid."""
    if credential is None:
        raise Unauthorized(
            "This server needs an API key: send it as `Authorization: Bearer <key>`.",
            invalid_token=False,
        )
    async with db.session() as session:
        row = (
            await session.execute(
                select(ApiKey.id, ApiKey.owner_id, ApiKey.last_used_at).where(
                    ApiKey.key_hash == hash_key(credential), ApiKey.revoked_at.is_(None)
                )
            )
        ).one_or_none()
        if row is None:
            raise Unauthorized(
                "This API key is not valid (unknown or revoked).", invalid_token=True
            )
        now = dt.datetime.now(dt.UTC)
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            await session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now())
            )
            await session.commit()
    return Principal(owner_id=row.owner_id, key_id=row.id)


async def create_key(db: Database, *, name: str, owner_id: str | None = None) -> NewKey:
    """A new key for a new owner named `name`, or for the existing owner `owner_id`."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    async with db.session() as session, session.begin():
        if owner_id is None:
            owner_id = "own_" + secrets.token_hex(8)
            session.add(Owner(id=owner_id, name=name))
            await session.flush()
        elif not await session.scalar(select(exists().where(Owner.id == owner_id))):
            raise UnknownOwner(
                f"There is no owner '{owner_id}'; `docqa keys list` shows the owners of keys."
            )
        session.add(
            ApiKey(
                id=key_id,
                owner_id=owner_id,
                name=name,
                prefix=secret[:10],
                key_hash=hash_key(secret),
            )
        )
    return NewKey(id=key_id, owner_id=owner_id, name=name, secret=secret)


async def list_keys(db: Database, *, include_revoked: bool = False) -> list[KeyInfo]:
    query = (
        select(ApiKey, Owner.name)
        .join(Owner, Owner.id == ApiKey.owner_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return [
        KeyInfo(
            id=key.id,
            owner_id=key.owner_id,
            owner_name=owner_name,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )
        for key, owner_name in rows
    ]


async def revoke_key(db: Database, key_id: str) -> None:
    """Revoke a key at once: its next request gets 401. The owner's documents stay."""
    async with db.session() as session, session.begin():
        result = await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(ApiKey.id)
        )
        if result.one_or_none() is None:
            raise UnknownKey(f"There is no active key '{key_id}'.")


async def any_active_key(db: Database) -> bool:
    async with db.session() as session:
        return bool(await session.scalar(select(exists().where(ApiKey.revoked_at.is_(None)))))
