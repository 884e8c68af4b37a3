"""Fair shares of the event loop between models (service.repository.FairShare)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.repository import FairShare


async def _started_this_turn(share: FairShare, names: list[str]) -> list[str]:
    """Start one request per entry of ``names``, all in one turn of the loop; the order in
    which they are let through."""
    order: list[str] = []

    async def request(name: str) -> None:
        await share.admit(name)
        order.append(name)

    await asyncio.gather(*(request(name) for name in names))
    return order


async def test_a_busy_model_starts_its_share_per_turn_and_a_quiet_one_goes_first() -> None:
    share = FairShare(per_turn=2, window_s=60)  # a stays active for the whole test
    await share.admit("a")  # a has requests (one a moment ago)
    # b floods: ten requests ready in one turn, and a's next request behind them.
    order = await _started_this_turn(share, ["b"] * 10 + ["a"])
    # b's first two start at once; then b is past its share while a is active: a's request
    # starts in the same turn, and b's other eight wait for later turns, two per turn.
    assert order[:3] == ["b", "b", "a"], order
    assert order.count("b") == 10 and share.waiting == 0


async def test_a_model_alone_is_never_held() -> None:
    share = FairShare(per_turn=1)

    async def twenty_in_one_turn() -> None:
        for _ in range(20):
            await share.admit("b")

    coro = twenty_in_one_turn()
    with pytest.raises(StopIteration):  # done without ever waiting for a later turn
        coro.send(None)


async def test_waiting_requests_keep_their_order_and_a_cancelled_one_leaves_the_line() -> None:
    share = FairShare(per_turn=1, window_s=60)  # a stays active for the whole test
    await share.admit("a")  # a is active, so b is held to one request per turn
    await share.admit("b")
    # In the next turn b may start one more: the first of these, the other three wait.
    waiting = [asyncio.ensure_future(share.admit("b")) for _ in range(4)]
    await asyncio.sleep(0)
    assert waiting[0].done() and share.waiting == 3
    waiting[2].cancel()
    await asyncio.sleep(0)
    # That turn released the next in line (1), and the cancelled request (2) left the line
    # rather than holding a place in it: only 3 still waits.
    assert share.waiting == 1
    order = []
    for i in (1, 3):
        waiting[i].add_done_callback(lambda _, i=i: order.append(i))
    await asyncio.gather(waiting[1], waiting[3])
    assert order == [1, 3] and waiting[2].cancelled() and share.waiting == 0


def test_a_share_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_turn"):
        FairShare(per_turn=0)


async def test_the_repository_admits_unknown_names_at_once_without_recording_them(
    tmp_path: Path,
) -> None:
    from service.config import Settings
    from service.repository import Repository

    models = Repository(Settings(model_dir=str(tmp_path), fair_share_per_turn=1))
    assert models.share is not None
    models._models = {"a": object(), "b": object()}  # type: ignore[dict-item]
    for i in range(1000):
        await models.admit(f"no-such-model-{i}")
    assert models.share._last_seen == {}
    assert Repository(Settings(model_dir=str(tmp_path), fair_share_per_turn=0)).share is None
