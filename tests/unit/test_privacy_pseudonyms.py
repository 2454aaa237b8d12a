"""Pseudonyms: keyed (HMAC-SHA256), rotated daily, the key outside the database in a 0600 file."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from polis.privacy.pseudonyms import PSEUDONYM_HEX, Pseudonymiser, load_or_create_secret


def test_the_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    first = load_or_create_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == first  # reused, not replaced
    assert len(first) >= 32


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="0600"):
        load_or_create_secret(path)


def test_pseudonyms_are_hmac_sha256_under_a_daily_key() -> None:
    master = b"m" * 32
    p = Pseudonymiser(master)
    day = date(2017, 2, 1)
    day_key = hmac.digest(master, b"polis-pseudonym-day:2017-02-01", "sha256")
    expected = hmac.new(day_key, b"24493", hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]
    assert p.pseudonym("24493", day) == expected
    assert p.pseudonym("24493", day) == Pseudonymiser(master).pseudonym("24493", day)  # stable within a day


def test_pseudonyms_cannot_be_linked_across_days_or_keys() -> None:
    p = Pseudonymiser(b"m" * 32)
    monday, tuesday = date(2017, 2, 6), date(2017, 2, 7)
    assert p.pseudonym("24493", monday) != p.pseudonym("24493", tuesday)
    assert Pseudonymiser(b"n" * 32).pseudonym("24493", monday) != p.pseudonym("24493", monday)


def test_the_vectorised_path_equals_one_hmac_per_record() -> None:
    p = Pseudonymiser(b"k" * 32)
    rng = np.random.default_rng(7)
    ids = np.array([str(v) for v in rng.integers(24000, 24050, 2000)], dtype=object)
    days = np.datetime64("2017-02-01") + rng.integers(0, 5, 2000).astype("timedelta64[D]")
    out = p.pseudonymise(ids, days).cast("string").to_pylist()
    for i in range(0, 2000, 97):
        assert out[i] == p.pseudonym(ids[i], days[i].astype(object))
    # same bike, same day -> same pseudonym; the raw id appears nowhere
    assert len(set(out)) == len({(a, str(b)) for a, b in zip(ids, days, strict=True)})
    assert not any(raw in pseudonym for raw, pseudonym in zip(ids, out, strict=True) if len(raw) > 4)


def test_a_short_master_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymiser(b"short")
