"""The disk spool on its own: order, restart, bound policy, torn tails."""

from __future__ import annotations

from pathlib import Path

from inference_server.analytics.spool import Spool, encode_line


def lines(start: int, count: int) -> list[bytes]:
    return [
        encode_line("inference.v1", f'{{"n":{i}}}'.encode()) for i in range(start, start + count)
    ]


async def drain(spool: Spool, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while (b := await spool.read(batch)) is not None:
        out += [r.value for r in b.records]
        spool.commit(b)
    return out


async def test_reads_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    spool.open()
    for i in range(0, 1000, 100):
        await spool.append(lines(i, 100))
    assert spool.backlog == 1000
    assert len(list(tmp_path.glob("*.log"))) > 2
    got = await drain(spool)
    assert got == [f'{{"n":{i}}}'.encode() for i in range(1000)]
    assert spool.backlog == 0
    assert len(list(tmp_path.glob("*.log"))) == 1  # consumed segments are deleted
    spool.close()


async def test_restart_resumes_from_the_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    spool.open()
    await spool.append(lines(0, 300))
    batch = await spool.read(120)
    assert batch is not None
    spool.commit(batch)
    unacked = await spool.read(50)  # read but never committed: must come back
    assert unacked is not None
    spool.close()

    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    again.open()
    assert again.backlog == 180
    await again.append(lines(300, 10))
    got = await drain(again)
    assert got == [f'{{"n":{i}}}'.encode() for i in range(120, 310)]
    again.close()


async def test_reading_ahead_of_the_cursor_while_batches_are_in_flight(tmp_path: Path) -> None:
    """The delivery loop reads on from batches not yet acknowledged; the cursor waits for them,
    and what was read ahead comes back from the cursor after a failure or a restart."""
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    spool.open()
    await spool.append(lines(0, 100))
    first = await spool.read(40)
    assert first is not None
    second = await spool.read(40, after=first.end)
    assert second is not None
    third = await spool.read(40, after=second.end)
    assert third is not None
    values = [r.value for b in (first, second, third) for r in b.records]
    assert values == [f'{{"n":{i}}}'.encode() for i in range(100)]  # across segments, in order
    assert await spool.read(40, after=third.end) is None  # nothing written after it yet
    await spool.append(lines(100, 5))
    fourth = await spool.read(40, after=third.end)
    assert fourth is not None and len(fourth.records) == 5

    spool.commit(first)  # the second failed: the third and fourth are dropped with it
    assert spool.backlog == 65
    got = await drain(spool)
    assert got == [f'{{"n":{i}}}'.encode() for i in range(40, 105)]
    spool.close()


async def test_torn_tail_after_a_crash_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    await spool.append(lines(0, 3))
    spool.close()
    segment = next(tmp_path.glob("*.log"))
    with segment.open("ab") as f:
        f.write(b'inference.v1\t{"n":3')  # the crash cut this line short
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    await again.append(lines(4, 2))
    assert await drain(again) == [f'{{"n":{i}}}'.encode() for i in (0, 1, 2, 4, 5)]
    again.close()


async def test_bound_drops_the_oldest_segment_and_counts_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    spool.open()
    for i in range(0, 5000, 100):
        await spool.append(lines(i, 100))
    assert spool.size_bytes <= 64 * 1024
    assert spool.dropped_events > 0
    assert spool.near_full
    got = await drain(spool, 1000)
    assert len(got) == 5000 - spool.dropped_events == spool.appended_events - spool.dropped_events
    # What survives is the newest, still in order.
    assert got[-1] == b'{"n":4999}'
    numbers = [int(g[5:-1]) for g in got]
    assert numbers == sorted(numbers)
    spool.close()
