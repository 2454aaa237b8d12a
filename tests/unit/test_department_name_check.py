"""A department's name becomes part of URIs (its subscriptions' id prefix) and of audit lines: a name with a
trailing newline, which a `$`-anchored pattern let through, is refused like any other bad name."""

from __future__ import annotations

import pytest

from polis.access.departments import AccessError, check_name


@pytest.mark.parametrize("name", ["police\n", "police\r\n", "", "Police", "a" * 65, "9lives", "pol ice"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(AccessError):
        check_name(name)


@pytest.mark.parametrize("name", ["police", "water_2-b", "a" * 64])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name
