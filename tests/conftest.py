"""Shared fixtures: a fresh SQLite store per test and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from api import create_app
from cdp import CDP, Settings


@pytest.fixture
def ingest_writer() -> str:
    """Where tracking batches are written; test modules of the ingest path run both ways."""
    return "thread"


@pytest.fixture
def settings(tmp_path: Path, ingest_writer: str) -> Settings:
    return Settings(
        db=tmp_path / "cdp.db",
        scheduler_enabled=False,
        key_cache_seconds=0,
        ingest_writer=ingest_writer,  # type: ignore[arg-type]
    )


@pytest.fixture
def fresh_db(settings: Settings) -> Iterator[CDP]:
    cdp = CDP(settings)
    try:
        yield cdp
    finally:
        cdp.close()


@pytest.fixture
def write_key(fresh_db: CDP) -> str:
    return fresh_db.keys.create("write", "web")[1]


@pytest.fixture
def read_key(fresh_db: CDP) -> str:
    return fresh_db.keys.create("read", "reader")[1]


@pytest.fixture
def admin_key(fresh_db: CDP) -> str:
    return fresh_db.keys.create("admin", "admin")[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    cdp: CDP

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def server(fresh_db: CDP) -> Iterator[LiveServer]:
    """The real app under uvicorn on a free loopback port, over the test's store."""
    port = free_port()
    config = uvicorn.Config(
        create_app(cdp=fresh_db, scheduler=False), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", fresh_db)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def count(cdp: CDP, table: str, where: str = "1", params: tuple[object, ...] = ()) -> int:
    return int(cdp.store.reader().execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0])
