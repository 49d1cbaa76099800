"""The byte budget (worker/budget.py): large messages wait for bytes, small ones never, nobody starves."""

from __future__ import annotations

import asyncio

from worker.host.budget import ByteBudget

MIB = 1 << 20


async def _holder(budget: ByteBudget, size: int, started: list[int], release: asyncio.Event) -> None:
    async with budget.hold(size):
        started.append(size)
        await release.wait()


async def test_large_messages_wait_until_their_bytes_fit() -> None:
    budget = ByteBudget(20 * MIB, small_bytes=64 * 1024)
    started: list[int] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_holder(budget, 6 * MIB, started, release)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert started == [6 * MIB] * 3 and budget.waiting == 2  # 3 x 6 MiB fit in 20 MiB, the 4th does not
    assert budget.in_use == 18 * MIB
    release.set()
    await asyncio.gather(*tasks)
    assert budget.in_use == 0 and budget.waiting == 0


async def test_small_messages_pass_while_large_ones_wait() -> None:
    budget = ByteBudget(8 * MIB, small_bytes=64 * 1024)
    started: list[int] = []
    release = asyncio.Event()
    large = [asyncio.create_task(_holder(budget, 6 * MIB, started, release)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert budget.waiting == 1
    small_done: list[int] = []
    small = [asyncio.create_task(_holder(budget, 1024, small_done, asyncio.Event())) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert len(small_done) == 50  # none of them waited behind the queued 6 MiB one
    for task in small:
        task.cancel()
    release.set()
    await asyncio.gather(*large)


async def test_a_message_larger_than_the_budget_runs_alone_and_is_not_starved() -> None:
    budget = ByteBudget(4 * MIB, small_bytes=64 * 1024)
    started: list[int] = []
    first_release, release = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_holder(budget, 3 * MIB, started, first_release))
    await asyncio.sleep(0)
    huge = asyncio.create_task(_holder(budget, 10 * MIB, started, release))
    later = asyncio.create_task(_holder(budget, 1 * MIB, started, release))  # would fit, but arrived later
    await asyncio.sleep(0.01)
    assert started == [3 * MIB]  # FIFO: the 1 MiB one does not overtake the huge one
    first_release.set()
    await asyncio.sleep(0.01)
    assert started == [3 * MIB, 10 * MIB]  # alone, once nothing large is in progress
    release.set()
    await asyncio.gather(first, huge, later)
    assert started[-1] == 1 * MIB and budget.in_use == 0


async def test_a_waiter_cancelled_gives_its_place_up() -> None:
    budget = ByteBudget(4 * MIB, small_bytes=0)
    started: list[int] = []
    release = asyncio.Event()
    holder = asyncio.create_task(_holder(budget, 4 * MIB, started, release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_holder(budget, 4 * MIB, started, release))
    behind = asyncio.create_task(_holder(budget, 2 * MIB, started, release))
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await asyncio.gather(holder, behind)
    assert started == [4 * MIB, 2 * MIB] and budget.in_use == 0 and budget.waiting == 0
