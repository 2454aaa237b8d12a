"""Suppression: nothing below k is released, and no suppressed entry can be derived from the published
ones. Checked as an attacker would, independently of the implementation: for every hidden entry, the
narrowest interval that linear programming proves from the published numbers (every row, column and
total equation, non-negativity) must leave more than one value possible."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from scipy.optimize import linprog

from polis.privacy.suppression import Link, SuppressedTable, released_table, suppress, suppress_jointly, with_margins

Cell = tuple[int, int, int]  # (table, row, column) in the table with totals as last row/column


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


# -- linked tables: one attacker, every table and every equation between them at once -------------------


def _grid(table: SuppressedTable) -> list[list[int | None]]:
    grid: list[list[int | None]] = [[*table.cells[i], table.row_totals[i]] for i in range(len(table.rows))]
    grid.append([*table.column_totals, table.total])
    return grid


def joint_attacker_intervals(
    tables: list[SuppressedTable],
    links: list[tuple[list[Cell], list[Cell]]],
    entries: Iterable[Cell] | None = None,
) -> dict[Cell, tuple[float, float]]:
    """Min and max of hidden entries by LP over everything published in all `tables` together: every row,
    column and total equation of each, every link (sum of the first list == sum of the second), and
    non-negativity. Written independently of `suppress_jointly`."""
    from scipy.sparse import coo_matrix

    grids = [_grid(t) for t in tables]
    hidden = [(t, i, j) for t, g in enumerate(grids) for i, row in enumerate(g) for j, v in enumerate(row) if v is None]
    if not hidden:
        return {}
    index = {c: n for n, c in enumerate(hidden)}
    equations: list[list[tuple[Cell, float]]] = []
    for t, g in enumerate(grids):
        n_rows, n_cols = len(g) - 1, len(g[0]) - 1
        for i in range(n_rows + 1):
            equations.append([((t, i, j), 1.0) for j in range(n_cols)] + [((t, i, n_cols), -1.0)])
        for j in range(n_cols + 1):
            equations.append([((t, i, j), 1.0) for i in range(n_rows)] + [((t, n_rows, j), -1.0)])
    for plus, minus in links:
        equations.append([(c, 1.0) for c in plus] + [(c, -1.0) for c in minus])
    rows, cols, data, rhs = [], [], [], []
    for terms in equations:
        known = 0.0
        coefficients: dict[int, float] = {}
        for (t, i, j), sign in terms:
            value = grids[t][i][j]
            if value is None:
                coefficients[index[(t, i, j)]] = coefficients.get(index[(t, i, j)], 0.0) + sign
            else:
                known += sign * value
        coefficients = {n: c for n, c in coefficients.items() if c}
        if coefficients:
            for n, c in coefficients.items():
                rows.append(len(rhs))
                cols.append(n)
                data.append(c)
            rhs.append(-known)
        else:
            assert known == 0, "the published numbers contradict an equation"
    a_eq = coo_matrix((data, (rows, cols)), shape=(len(rhs), len(hidden))).tocsr()
    out = {}
    for cell in entries if entries is not None else hidden:
        objective = np.zeros(len(hidden))
        objective[index[cell]] = 1
        low = linprog(objective, A_eq=a_eq, b_eq=rhs, bounds=(0, None))
        high = linprog(-objective, A_eq=a_eq, b_eq=rhs, bounds=(0, None))
        assert low.status == 0, low.message
        out[cell] = (float(low.fun), float("inf") if high.status == 3 else -float(high.fun))
    return out


def assert_jointly_protected(
    tables: list[SuppressedTable],
    fulls: list[np.ndarray],
    links: list[tuple[list[Cell], list[Cell]]],
    entries: Iterable[Cell] | None = None,
) -> int:
    """No released number below k in any table, and every attacked hidden entry keeps an interval at least
    1 wide holding its true value, against the joint system."""
    for table, full in zip(tables, fulls, strict=True):
        assert all(v >= table.k for v in table.released_values())
        published, hidden = table.extended()
        assert np.array_equal(published[~hidden], full[~hidden])
    checked = joint_attacker_intervals(tables, links, entries)
    for (t, i, j), (low, high) in checked.items():
        assert low - 1e-6 <= fulls[t][i, j] <= high + 1e-6
        assert high - low >= 1 - 1e-6, ((t, i, j), int(fulls[t][i, j]), low, high)
    return len(checked)


def _linked(departures: np.ndarray, groups: list[list[int]], od: np.ndarray) -> tuple[list[np.ndarray], list[Link]]:
    """A departures table (areas x hours) and an OD matrix whose row g counts the trips of the areas in
    groups[g]: the OD row totals equal the groups' departure totals."""
    fulls = [with_margins(departures), with_margins(od)]
    n_hours, n_od = departures.shape[1], od.shape[1]
    links = [Link(tuple((0, i, n_hours) for i in group), ((1, g, n_od),)) for g, group in enumerate(groups)]
    return fulls, links


def _attacker_links(links: list[Link]) -> list[tuple[list[Cell], list[Cell]]]:
    return [(list(link.plus), list(link.minus)) for link in links]


def _tables(fulls: list[np.ndarray], masks: list[np.ndarray], k: int = 10) -> list[SuppressedTable]:
    return [
        released_table(f, m, [f"r{i}" for i in range(f.shape[0] - 1)], [f"c{j}" for j in range(f.shape[1] - 1)], k)
        for f, m in zip(fulls, masks, strict=True)
    ]


def test_tables_safe_on_their_own_are_solved_together_and_joint_suppression_mends_them() -> None:
    # Area 1 is small (row total 5): on its own the departures table hides area 2's total as the partner.
    # But area 2 alone makes up OD row 1, whose total (110) is published: with the link, area 2's total is
    # known, and then area 1's from the grand total.
    departures = np.array([[40, 30, 25, 35], [1, 2, 1, 1], [30, 20, 25, 35]])
    od = np.array([[60, 75], [50, 60]])
    fulls, links = _linked(departures, [[0, 1], [2]], od)
    alone = [
        suppress(departures, ["a0", "a1", "a2"], ["h0", "h1", "h2", "h3"]),
        suppress(od, ["g0", "g1"], ["g0", "g1"]),
    ]
    intervals = joint_attacker_intervals(alone, _attacker_links(links))
    assert any(high - low < 1 - 1e-6 for low, high in intervals.values())  # the per-table release leaks
    masks = suppress_jointly(fulls, links, 10)
    assert assert_jointly_protected(_tables(fulls, masks), fulls, _attacker_links(links)) >= 6


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_linked_tables_are_protected_jointly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    departures = rng.poisson(rng.choice([2.0, 6.0, 15.0], size=(7, 1)), size=(7, 6))
    groups = [[0, 1, 2], [3], [4, 5], [6]]
    od = np.zeros((4, 4), dtype=np.int64)
    for g, group in enumerate(groups):
        od[g] = rng.multinomial(int(departures[group].sum()), [0.4, 0.3, 0.2, 0.1])
    fulls, links = _linked(departures, groups, od)
    masks = suppress_jointly(fulls, links, 10)
    assert_jointly_protected(_tables(fulls, masks), fulls, _attacker_links(links))


def test_a_link_that_does_not_hold_is_refused() -> None:
    fulls, links = _linked(np.array([[20, 30]]), [[0]], np.array([[49]]))
    with pytest.raises(ValueError, match="does not hold"):
        suppress_jointly(fulls, links, 10)
