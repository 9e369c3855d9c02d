"""``freeze_startup_heap``: start-up's objects leave the collector's sight; later garbage is still collected."""

from __future__ import annotations

import gc
import weakref

from shared.runtime import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = _Node()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is before for o in gc.get_objects())  # not walked by any collection now
        later = _Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
