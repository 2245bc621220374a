from __future__ import annotations

from conveyor.history import HOUR_MS, SLOT_MS, SLOTS, columns


def test_the_last_hour_as_columns_of_slots() -> None:
    hour = 490_000
    now = hour * HOUR_MS + 10 * SLOT_MS + 1234  # in this hour's slot 10
    this_hour = {"c10": "3", "f10": "1", "q10": "7", "r10": "2", "c2": "5", "junk": "9", "cx": "1",
                 "q4": "0", "Q4": "40", "r4": "0", "R4": "6"}
    before = {"c700": "4", "q700": "11", "r700": "1", "c5": "99", "q5": "50"}  # c5: over an hour ago
    out = columns(now, hour, [this_hour, before])
    assert out["slotSeconds"] == 5 and all(len(out[k]) == SLOTS for k in ("completed", "failed", "unfinished", "running"))
    assert out["from"] == hour * HOUR_MS + 10 * SLOT_MS - (SLOTS - 1) * SLOT_MS  # the current slot last
    assert out["completed"][-1] == 3 and out["failed"][-1] == 1 and out["completed"][-9] == 5
    assert sum(out["completed"]) == 3 + 5 + 4  # the slot of more than an hour ago is left out
    at_700 = 700 - 11  # index of the hour before's slot 700: the first shown is its slot 11
    assert out["completed"][at_700] == 4
    # depths carry forward from the last slot that recorded them; the first shown carries slot 5's
    assert out["unfinished"][0] == 50 and out["running"][0] is None
    assert out["unfinished"][at_700] == 11 and out["running"][at_700 + 5] == 1
    assert out["unfinished"][-1] == 7 and out["running"][-1] == 2
    # a slot shows the most it recorded; the ones after carry its last value
    assert (out["unfinished"][-7], out["running"][-7]) == (40, 6)
    assert (out["unfinished"][-6], out["running"][-6]) == (0, 0)


def test_an_empty_history_is_zeros_and_unknown_depths() -> None:
    out = columns(5 * HOUR_MS, 5, [{}, {}])
    assert set(out["completed"]) == {0} and set(out["unfinished"]) == {None}
