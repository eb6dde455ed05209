"""Raw access to what each backend stores, beside convtree: to damage records on purpose
and to search the stored bytes (the tests of damaged records, deletion and leftovers).

``Medium.open(storage, url)`` gives, for a storage opened on memory, file, SQLite,
PostgreSQL or S3, the means to overwrite a record's stored bytes or JSON value the way
a crash, a disk error or a careless hand would, without going through convtree.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from convtree.storage.backends.file import _file_name


def admin_connect_args(url: str) -> dict[str, object]:
    """asyncpg.connect() keywords for the server in ``url`` (user, database, socket host)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    args: dict[str, object] = {
        "user": unquote(parts.username or "postgres"),
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "host": query["host"][0] if "host" in query else parts.hostname or "localhost",
    }
    if parts.password:
        args["password"] = unquote(parts.password)
    if parts.port:
        args["port"] = parts.port
    return args


class Medium:
    """Raw access to one store's records (the base: the memory store's dict)."""

    raw_bytes = False  # whether records are stored as bytes that can be garbled

    def __init__(self, records: Any) -> None:
        self.records = records

    @classmethod
    async def open(cls, storage: Any, url: str) -> Medium:
        scheme = urlsplit(url).scheme
        kinds: dict[str, type[Medium]] = {
            "memory": Medium,
            "file": FileMedium,
            "sqlite": SQLiteMedium,
            "postgresql": PostgresMedium,
            "s3": S3Medium,
        }
        medium = kinds[scheme](storage.records)
        await medium.connect(url)
        return medium

    async def connect(self, url: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def raw(self, key: str) -> bytes:
        raise NotImplementedError

    async def put_raw(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def put_value(self, key: str, value: Any) -> None:
        """Store ``value`` as the record (a dict: its fields; anything else: as it is)."""
        self.records._records[key] = value

    async def remove(self, key: str) -> None:
        del self.records._records[key]

    async def dump(self) -> bytes:
        """Everything stored, as bytes, to search for a text."""
        return json.dumps(self.records._records, ensure_ascii=False).encode()


class FileMedium(Medium):
    raw_bytes = True

    def _path(self, key: str) -> Path:
        return Path(self.records.files.directory) / _file_name(key)

    async def raw(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    async def put_raw(self, key: str, data: bytes) -> None:
        self._path(key).write_bytes(data)

    async def put_value(self, key: str, value: Any) -> None:
        body = {"id": key, "data": value, "metadata": {}}
        self._path(key).write_text(json.dumps(body), "utf-8")

    async def remove(self, key: str) -> None:
        self._path(key).unlink()

    async def dump(self) -> bytes:
        root = Path(self.records.files.directory)
        return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


class SQLiteMedium(Medium):
    raw_bytes = True

    async def connect(self, url: str) -> None:
        self.path = self.records.db.db_path
        self.table = self.records.table

    def _run(self, sql: str, params: list[Any]) -> list[Any]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA ignore_check_constraints = ON")  # data need not be JSON
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    async def raw(self, key: str) -> bytes:
        rows = self._run(f"SELECT CAST(data AS BLOB) FROM {self.table} WHERE id = ?", [key])
        return bytes(rows[0][0])

    async def put_raw(self, key: str, data: bytes) -> None:
        self._run(f"UPDATE {self.table} SET data = CAST(? AS TEXT) WHERE id = ?", [data, key])

    async def put_value(self, key: str, value: Any) -> None:
        self._run(f"UPDATE {self.table} SET data = ? WHERE id = ?", [json.dumps(value), key])

    async def remove(self, key: str) -> None:
        self._run(f"DELETE FROM {self.table} WHERE id = ?", [key])

    async def dump(self) -> bytes:
        rows = self._run(f"SELECT id, CAST(data AS BLOB) FROM {self.table}", [])
        return b"\n".join(str(i).encode() + b" " + bytes(d) for i, d in rows)


class PostgresMedium(Medium):
    async def connect(self, url: str) -> None:
        import asyncpg

        self.table = self.records.table
        self.conn = await asyncpg.connect(**admin_connect_args(url))

    async def close(self) -> None:
        await self.conn.close()

    async def put_value(self, key: str, value: Any) -> None:
        await self.conn.execute(
            f"UPDATE {self.table} SET data = $2::jsonb WHERE id = $1", key, json.dumps(value)
        )

    async def remove(self, key: str) -> None:
        await self.conn.execute(f"DELETE FROM {self.table} WHERE id = $1", key)

    async def dump(self) -> bytes:
        rows = await self.conn.fetch(f"SELECT id, data::text FROM {self.table}")
        return "\n".join(f"{r[0]} {r[1]}" for r in rows).encode()


class S3Medium(Medium):
    raw_bytes = True

    async def connect(self, url: str) -> None:
        import boto3

        endpoint = parse_qs(urlsplit(url).query)["endpoint_url"][0]
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = self.records.bucket
        self.prefix = self.records.prefix

    async def close(self) -> None:
        self.client.close()

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}.json"

    async def raw(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return body

    async def put_raw(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    async def put_value(self, key: str, value: Any) -> None:
        if isinstance(value, dict):  # dataknobs-data's object layout
            value = {
                "fields": {
                    name: {"name": name, "value": v, "type": "json", "metadata": {}}
                    for name, v in value.items()
                },
                "metadata": {},
            }
        await self.put_raw(key, json.dumps(value).encode())

    async def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def dump(self) -> bytes:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", ()):
                body = self.client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"]
                out.append(item["Key"].encode() + b" " + body.read())
        return b"\n".join(out)
