"""The queue between ``emit`` and the spool writer: bound, order, and a batch put back."""

from __future__ import annotations

import asyncio

from inference_server.analytics.queue import EmitQueue


async def test_bound_order_and_put_back() -> None:
    queue = EmitQueue(3)
    assert [queue.put(b"a"), queue.put(b"b"), queue.put(b"c")] == [True, True, True]
    assert queue.put(b"d") is False  # full: refused, and the caller counts it as dropped
    taken = queue.take(2)
    assert taken == [b"a", b"b"]
    assert queue.put(b"d") and queue.put(b"e")
    queue.put_back(taken)  # a cancelled writer: back in front, even past the bound
    assert len(queue) == 5
    assert queue.take(10) == [b"a", b"b", b"c", b"d", b"e"]
    assert queue.take(10) == []


async def test_wait_returns_once_a_line_is_queued() -> None:
    queue = EmitQueue(10)
    waiter = asyncio.ensure_future(queue.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.put(b"x")
    await asyncio.wait_for(waiter, 5)
    queue.take(1)
    again = asyncio.ensure_future(queue.wait())  # emptied: waits again
    await asyncio.sleep(0.01)
    assert not again.done()
    queue.put(b"y")
    await asyncio.wait_for(again, 5)
