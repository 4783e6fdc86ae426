"""Process-wide tuning of the Monitor and the workers (service.process)."""

from __future__ import annotations

import gc

import pytest

from service.process import collections_paused


def test_a_tick_runs_with_collections_paused_and_they_resume_after() -> None:
    assert gc.isenabled()
    seen = collections_paused(lambda: gc.isenabled())
    assert seen is False and gc.isenabled()


def test_collections_resume_when_the_tick_fails() -> None:
    def failing() -> None:
        raise RuntimeError("tick failed")

    with pytest.raises(RuntimeError):
        collections_paused(failing)
    assert gc.isenabled()


def test_a_process_that_turned_collections_off_keeps_them_off() -> None:
    gc.disable()
    try:
        assert collections_paused(lambda: 42) == 42
        assert not gc.isenabled()
    finally:
        gc.enable()
