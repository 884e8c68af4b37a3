"""The open-loop p99 target of bench.serve: 5 ms, or the bare app's own p99 in the same run
when the machine cannot give even the bare app 5 ms."""

from __future__ import annotations

import pytest

from bench.serve import P99_MAX_MS, p99_limit


@pytest.mark.parametrize("bare_p99", [None, 0.8, P99_MAX_MS])
def test_the_limit_is_five_ms_when_the_machine_allows_it(bare_p99: float | None) -> None:
    limit, shown = p99_limit(bare_p99)
    assert limit == P99_MAX_MS
    assert shown == "<= 5 ms"


def test_a_machine_slower_than_five_ms_holds_the_service_to_the_bare_apps_tail() -> None:
    limit, shown = p99_limit(7.25)
    assert limit == 7.25
    assert shown == "<= bare's 7.25 ms (> 5)"


def test_an_unmeasured_bare_tail_does_not_loosen_the_target() -> None:
    assert p99_limit(float("nan"))[0] == P99_MAX_MS
