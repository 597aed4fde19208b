"""A DuckDB connection in a child process: ``python -m cdp.duckdb_worker``.

DuckDB never runs in a process that holds the store's SQLite connections. DuckDB's SQLite scanner carries
its own copy of SQLite, and two copies of SQLite in one process break each other's POSIX locks: the
scanner's copy does not see this process's connections, takes itself for the only one and truncates the
WAL index (``-shm``) that the store's writer and checkpointer have mapped, which kills the process with
SIGBUS or corrupts the index. In another process, the usual cross-process locking applies.

Both sides import this module: ``DuckDBWorker`` (the parent's handle) and ``main`` (the child) share
``send_frame``/``recv_frame``: an 8-byte little-endian length and a pickle, each way. The child runs the
setup statements, then answers requests ``(shape, sql, params)`` until its stdin closes. This module
imports nothing of cdp and no DuckDB at the top, so the child starts quickly and the parent does not load
DuckDB until a query fails.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any

_HEAD = struct.Struct("<Q")


def send_frame(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEAD.pack(len(data)))
    stream.write(data)
    stream.flush()


def recv_frame(stream: IO[bytes]) -> Any:
    """The next object, or None when the other side has closed the stream."""
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    return pickle.loads(stream.read(_HEAD.unpack(head)[0]))


def sql_string(text: str) -> str:
    """A SQL string literal (quotes doubled; DuckDB's standard strings have no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


def attach_sql(path: object) -> str:
    """The statement that attaches the SQLite store at ``path`` read-only as ``db`` (ATTACH takes no parameters)."""
    return f"ATTACH {sql_string(str(path))} AS db (TYPE sqlite, READ_ONLY)"


class DuckDBWorker:
    """A DuckDB connection in a child process, with ``execute(sql, params).fetchall()`` like DuckDB's own.

    ``setup`` statements run first (ATTACH, views, temp tables). Errors of a query are raised here with
    DuckDB's exception type and message; the session stays usable. If the child dies, every later call
    raises RuntimeError.
    """

    def __init__(self, setup: list[str]) -> None:
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cdp.duckdb_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            self._call(setup)
        except BaseException:
            self.close()
            raise

    def _call(self, request: object) -> Any:
        cause: Exception | None = None
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None
            try:
                send_frame(stdin, request)
                reply = recv_frame(stdout)
            except (OSError, ValueError) as exc:
                reply, cause = None, exc
        if reply is None:
            code = self._process.poll()
            raise RuntimeError(f"the DuckDB worker process exited unexpectedly (exit code {code})") from cause
        if reply[0] == "error":
            _, module, name, message = reply
            if module.lstrip("_").startswith("duckdb"):
                import duckdb

                kind = getattr(duckdb, name, None)
                if isinstance(kind, type) and issubclass(kind, Exception):
                    raise kind(message)
            raise RuntimeError(f"{name}: {message}")
        return reply[1] if len(reply) > 1 else None

    def execute(self, sql: str, params: list[Any] | None = None) -> Rows:
        return Rows(self._call(("rows", sql, params or [])))

    def column(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        """The first column of the answer (cheaper to hand over than rows)."""
        result: list[Any] = self._call(("column", sql, params or []))
        return result

    def numpy(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """The answer as DuckDB's ``fetchnumpy``: a dict of column name -> numpy array (masked where NULL)."""
        result: dict[str, Any] = self._call(("numpy", sql, params or []))
        return result

    def run(self, sql: str, params: list[Any] | None = None) -> None:
        """A statement whose answer is not needed."""
        self._call(("exec", sql, params or []))

    def close(self) -> None:
        process = self._process
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Rows:
    rows: list[tuple[Any, ...]]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


# -- the child ---------------------------------------------------------------------------------------


def _failure(exc: BaseException) -> tuple[str, str, str, str]:
    return ("error", type(exc).__module__, type(exc).__name__, str(exc))


def _warm() -> None:
    """DuckDB's first statement with parameters imports pandas (~0.4 s): done while the setup runs."""
    import duckdb

    with suppress(Exception):
        duckdb.connect().execute("SELECT $1", [0]).fetchall()


def _serve(setup: list[str], inp: IO[bytes], out: IO[bytes]) -> None:
    import duckdb

    try:
        from duckdb_extensions import import_extension

        import_extension("sqlite_scanner")
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.execute("LOAD sqlite_scanner")
        for statement in setup:
            con.execute(statement)
    except Exception as exc:
        send_frame(out, _failure(exc))
        return
    send_frame(out, ("ready",))
    while (request := recv_frame(inp)) is not None:
        shape, sql, params = request
        try:
            cursor = con.execute(sql, params)
            if shape == "exec":
                send_frame(out, ("ok", None))
            elif shape == "numpy":
                send_frame(out, ("ok", cursor.fetchnumpy()))
            else:
                rows = cursor.fetchall()
                send_frame(out, ("ok", [row[0] for row in rows] if shape == "column" else rows))
        except Exception as exc:
            send_frame(out, _failure(exc))


def main() -> None:
    # The pipe carries frames only: anything else writing to stdout (Python or C) goes to stderr.
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    setup = recv_frame(inp)
    if setup is None:
        return
    import duckdb  # noqa: F401  (before the warming thread, which imports it too)

    warmer = threading.Thread(target=_warm)
    warmer.start()
    try:
        _serve(setup, inp, out)
    finally:
        warmer.join()


if __name__ == "__main__":
    main()
