"""Suppression: nothing below k is released, and no suppressed entry can be derived from the published
ones. Checked as an attacker would, independently of the implementation: for every hidden entry, the
narrowest interval that linear programming proves from the published numbers (every row, column and
total equation, non-negativity) must leave more than one value possible."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from scipy.optimize import linprog

from polis.privacy.suppression import SuppressedTable, suppress


def attacker_intervals(
    table: SuppressedTable, entries: Iterable[tuple[int, int]] | None = None
) -> dict[tuple[int, int], tuple[float, float]]:
    """Min and max of hidden entries (indices in the table with totals as last row/column) by LP."""
    n_rows, n_cols = len(table.rows), len(table.columns)
    grid: list[list[int | None]] = [[*table.cells[i], table.row_totals[i]] for i in range(n_rows)]
    grid.append([*table.column_totals, table.total])
    hidden = [(i, j) for i in range(n_rows + 1) for j in range(n_cols + 1) if grid[i][j] is None]
    if not hidden:
        return {}
    index = {ij: n for n, ij in enumerate(hidden)}
    rows_eq, rhs = [], []
    lines = [([(i, j) for j in range(n_cols)], (i, n_cols)) for i in range(n_rows + 1)]
    lines += [([(i, j) for i in range(n_rows)], (n_rows, j)) for j in range(n_cols + 1)]
    for parts, total in lines:
        coefficients = np.zeros(len(hidden))
        known = 0.0
        for ij in parts:
            value = grid[ij[0]][ij[1]]
            if value is None:
                coefficients[index[ij]] += 1
            else:
                known += value
        total_value = grid[total[0]][total[1]]
        if total_value is None:
            coefficients[index[total]] -= 1
            target = -known
        else:
            target = total_value - known
        if coefficients.any():
            rows_eq.append(coefficients)
            rhs.append(target)
    a_eq, b_eq = np.array(rows_eq), np.array(rhs)
    out = {}
    for ij in entries if entries is not None else hidden:
        objective = np.zeros(len(hidden))
        objective[index[ij]] = 1
        low = linprog(objective, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
        high = linprog(-objective, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
        out[ij] = (float(low.fun), float("inf") if high.status == 3 else -float(high.fun))
    return out


def with_totals(counts: np.ndarray) -> np.ndarray:
    full = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.int64)
    full[:-1, :-1] = counts
    full[:-1, -1] = counts.sum(axis=1)
    full[-1, :-1] = counts.sum(axis=0)
    full[-1, -1] = counts.sum()
    return full


def assert_protected(
    table: SuppressedTable, counts: np.ndarray, entries: Iterable[tuple[int, int]] | None = None
) -> int:
    """No released number below k; published numbers are the truth; no hidden entry is derivable."""
    assert all(v >= table.k for v in table.released_values())
    full = with_totals(counts)
    published, hidden = table.extended()
    assert np.array_equal(published[~hidden], full[~hidden])
    checked = attacker_intervals(table, entries)
    for (i, j), (low, high) in checked.items():
        assert low - 1e-6 <= full[i, j] <= high + 1e-6
        # Not derivable: the attacker's interval leaves at least one other integer possible.
        assert high - low >= 1 - 1e-6, ((i, j), int(full[i, j]), low, high)
    return len(checked)


def _check(counts: np.ndarray, k: int = 10) -> SuppressedTable:
    table = suppress(counts, [f"r{i}" for i in range(counts.shape[0])], [f"c{j}" for j in range(counts.shape[1])], k)
    assert_protected(table, counts)
    return table


@pytest.mark.parametrize(
    ("shape", "mean", "seed"),
    [((4, 5), 12.0, 1), ((6, 6), 8.0, 2), ((5, 8), 4.0, 3), ((3, 3), 20.0, 4), ((7, 4), 15.0, 5), ((2, 2), 9.0, 6)],
)
def test_random_tables_are_protected(shape: tuple[int, int], mean: float, seed: int) -> None:
    _check(np.random.default_rng(seed).poisson(mean, shape))


def test_a_single_small_cell_takes_partners_in_its_row_and_column() -> None:
    counts = np.array([[3, 40, 50], [60, 70, 80], [90, 25, 30]])
    table = _check(counts)
    assert table.cells[0][0] is None
    assert sum(v is None for v in table.cells[0]) >= 2  # its row total would give it away otherwise
    assert sum(row[0] is None for row in table.cells) >= 2
    assert table.suppressed_count() == 4  # the smallest safe pattern: a rectangle through the small cell
    assert table.cells[2] == [90, 25, 30] and table.row_totals == [93, 210, 145]


def test_zero_blocks_cannot_be_recovered_by_combining_lines() -> None:
    # Rows a+b minus column z would give the four zeros exactly, though every line hides 2+ entries.
    _check(np.array([[0, 0, 30], [0, 0, 40], [25, 35, 45]]))


def test_an_all_small_table_publishes_nothing_below_k() -> None:
    table = _check(np.array([[1, 2], [3, 1]]))
    assert table.released_values() == []


def test_large_counts_are_all_published() -> None:
    table = _check(np.array([[15, 20], [30, 11]]))
    assert table.suppressed_count() == 0 and table.total == 76


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        suppress(np.array([[-1]]), ["a"], ["x"], 10)
    with pytest.raises(ValueError, match="do not match"):
        suppress(np.array([[1, 2]]), ["a"], ["x"], 10)
