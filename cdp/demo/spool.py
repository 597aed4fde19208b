"""Spilling events to bucket files while people are generated, and sorting the buckets back into one file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cdp.demo.pools import BUCKET_HOURS, HOURLY_BUCKETS, WINDOW_DAYS

Blocks = dict[int, list[tuple[int, int, int]]]  # bucket -> (offset, length, marks) of its spilled blocks


class Spool:
    """Event lines on their way to a time-sorted file, without holding them all in memory.

    A line starts with its own timestamp (`{"timestamp":"2026-...`), so sorting lines as text sorts them
    by time; an unparseable timestamp is stored as `<true time>\x01<bad text>` and the true part is cut
    on output (`_unmark`). Lines wait in one list per clock hour. A spill appends them to one file as a
    block per bucket (6 hours, or 1 hour in the busy last week) and notes where each block is; at the end
    every bucket is read back (from every chunk's file when there are several) and sorted on its own.
    The truth (`message_id,entity`) is written in generation order as it goes.
    """

    def __init__(self, truth: IO[str], first_hour: int, path: Path) -> None:
        self.truth_file, self.first_hour, self.path = truth, first_hour, path
        self.hours: list[list[str]] = [[] for _ in range(WINDOW_DAYS * 24 + 1)]
        self.truth: list[str] = []  # one "message_id,entity" line per buffered event
        self.blocks: Blocks = {}
        self.file: IO[bytes] | None = None
        self.count = 0

    def spill(self) -> None:
        self.count += len(self.truth)
        self.truth_file.write("".join(self.truth))
        self.truth.clear()
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        first, hourly = 0, len(self.hours) - HOURLY_BUCKETS
        while first < len(self.hours):  # a bucket is named after the clock hour it starts at
            if first >= hourly:  # the busy last days: one bucket per hour
                bucket, stop = self.first_hour + first, first + 1
            else:  # before that, whole 6-hour stretches of the clock
                bucket = (self.first_hour + first) // BUCKET_HOURS * BUCKET_HOURS
                stop = min(hourly, bucket + BUCKET_HOURS - self.first_hour)
            hours = range(first, stop)
            data = "".join(line for hour in hours for line in self.hours[hour]).encode()
            if data:
                self.blocks.setdefault(bucket, []).append((self.file.tell(), len(data), data.count(b"\x01")))
                self.file.write(data)
                for hour in hours:
                    self.hours[hour].clear()
            first = hours.stop

    def finish(self, path: Path) -> int:
        """Write the events sorted by time (all in memory if they never spilled); answer how many."""
        if self.file is None:
            with open(path, "wb") as out:
                for lines in self.hours:
                    lines.sort()
                    out.write(_unmark("".join(lines).encode()))
            self.truth_file.write("".join(self.truth))
            return len(self.truth)
        self.spill()
        self.close()
        blocks = sorted(self.blocks.items())
        path.write_bytes(b"")
        sort_buckets([(bucket, [(self.path, *part) for part in parts]) for bucket, parts in blocks], path, 0)
        return self.count

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _unmark(blob: bytes) -> bytes:
    """Drop the true time (24 characters) kept in front of each `\x01`, and the mark itself."""
    if b"\x01" not in blob:
        return blob
    parts, start = [], 0
    while (mark := blob.find(b"\x01", start)) >= 0:
        parts.append(blob[start : mark - 24])
        start = mark + 1
    parts.append(blob[start:])
    return b"".join(parts)


# buckets to sort, each with the (file, offset, length, marks) of its blocks
Plan = list[tuple[int, list[tuple[Path, int, int, int]]]]


def sort_buckets(plan: Plan, out: Path, at: int) -> int:
    """Sort each bucket's blocks (from every chunk's spill file) and write them, in bucket order, into
    `out` from byte `at` on; answer how many bytes that was.

    Each spill file is opened once and one bucket is in memory at a time. When chunks were made in
    parallel, several of these run at once, each writing its own stretch of the output.
    """
    files: dict[Path, IO[bytes]] = {}
    written = 0
    try:
        with open(out, "r+b") as dest:
            dest.seek(at)
            for _bucket, blocks in plan:
                lines: list[bytes] = []
                for path, offset, length, _marks in blocks:
                    if path not in files:
                        files[path] = open(path, "rb")  # noqa: SIM115 - closed below
                    files[path].seek(offset)
                    lines += files[path].read(length).splitlines(keepends=True)
                lines.sort()
                written += dest.write(_unmark(b"".join(lines)))
    finally:
        for fh in files.values():
            fh.close()
    return written


def plan_bytes(plan: Plan) -> int:
    """Bytes `plan` writes: what was spilled, less the 24-character true time and mark of each bad line."""
    return sum(length - 25 * marks for _, blocks in plan for *_, length, marks in blocks)


@dataclass(frozen=True)
class Job:
    """One chunk of people, generated on its own (in a worker process when there are several)."""

    out: Path  # the final files when this is the only chunk; else the work folder for parts
    customers: int  # in the whole dataset
    seed: int
    now_ms: int
    chunk: int
    chunks: int
    lo: int  # people lo..hi-1
    hi: int
