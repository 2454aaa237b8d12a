"""Small counts never leave the gate: threshold suppression with complementary suppression.

A released table is a matrix of counts with its row totals, column totals and grand total. Every count
below k (zeros included: a released number below k is a small count, whatever it counts) is suppressed
(primary suppression). Totals let an attacker solve for what was hidden, so more entries are hidden
(complementary suppression) until no hidden entry can be derived from the published ones:

- Seen as equations, every line (a row with its total, a column with its total, the totals with the grand
  total) sums to its total. A hidden entry is pinned by these equations exactly when it is a bridge of the
  bipartite graph whose nodes are the lines and whose edges are the hidden entries (it lies on no cycle);
  a line with a single hidden entry is the simplest case. Each bridge gets a partner hidden across it.
- Non-negativity pins entries too: if a published total exceeds its published parts by less than k, every
  hidden entry of that line is known to be small (by 0, known to be 0). Such a line hides one more entry.

When neither rule fires, `derivable` checks exactly (one LP plus a bridge search) whether any hidden entry
is still pinned to one value by the published numbers under non-negativity, and hides a partner of each
one that is; the loop ends when none is. The tests attack the released tables independently (interval
bounds of every hidden entry by linear programming, two LPs per entry).

Tables released together and linked by sums (a day's hourly departures and its OD matrix: the OD row totals
of a coarse cell are the departures of the areas inside it) go through `suppress_jointly`: each table as
above, then the same exact check on the joint system (every table's lines plus the `Link` equations), a
partner for each pinned entry, repeated until nothing is pinned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_K = 10


@dataclass(frozen=True, slots=True)
class SuppressedTable:
    """Counts with margins, as released: None where suppressed."""

    rows: list[str]
    columns: list[str]
    cells: list[list[int | None]]
    row_totals: list[int | None]
    column_totals: list[int | None]
    total: int | None
    k: int

    def extended(self) -> tuple[np.ndarray, np.ndarray]:
        """The (R+1)x(C+1) table with margins (totals in the last row/column) and its hidden mask."""
        rows, cols = len(self.rows), len(self.columns)
        values = np.zeros((rows + 1, cols + 1), dtype=float)
        hidden = np.zeros((rows + 1, cols + 1), dtype=bool)
        entries: list[list[int | None]] = [[*self.cells[i], self.row_totals[i]] for i in range(rows)]
        entries.append([*self.column_totals, self.total])
        for i, line in enumerate(entries):
            for j, value in enumerate(line):
                if value is None:
                    hidden[i, j] = True
                else:
                    values[i, j] = value
        return values, hidden

    def released_values(self) -> list[int]:
        """Every number this table publishes (cells and totals)."""
        numbers = [v for row in self.cells for v in row if v is not None]
        numbers += [v for v in self.row_totals if v is not None]
        numbers += [v for v in self.column_totals if v is not None]
        if self.total is not None:
            numbers.append(self.total)
        return numbers

    def suppressed_count(self) -> int:
        return sum(v is None for row in self.cells for v in row)


def with_margins(counts: np.ndarray) -> np.ndarray:
    """(R x C) counts -> (R+1) x (C+1) with row totals, column totals and the grand total."""
    rows, cols = counts.shape
    full = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    full[:rows, :cols] = counts
    full[:rows, cols] = counts.sum(axis=1)
    full[rows, :cols] = counts.sum(axis=0)
    full[rows, cols] = counts.sum()
    return full


def suppression_mask(full: np.ndarray, k: int, hidden: np.ndarray | None = None) -> np.ndarray:
    """Which entries of a table with margins (`with_margins`) to hide: primary then complementary. `hidden`:
    entries already hidden for other reasons (joint suppression), kept hidden."""
    if k < 1:
        raise ValueError(f"the suppression threshold k must be at least 1, got {k}")
    hidden = full < k if hidden is None else (hidden | (full < k))
    while True:
        changed = _protect_residuals(full, hidden, k)
        changed |= _break_bridges(full, hidden)
        if changed:
            continue
        pinned = derivable(full, hidden)
        if not pinned.any():
            return hidden
        for i, j in np.argwhere(pinned):
            _hide_partner(full, hidden, int(i), int(j))


def suppress(counts: np.ndarray, rows: list[str], columns: list[str], k: int = DEFAULT_K) -> SuppressedTable:
    """Release `counts` (rows x columns, non-negative integers) with margins, small counts suppressed."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(rows), len(columns)):
        raise ValueError(f"counts of shape {counts.shape} do not match {len(rows)} rows x {len(columns)} columns")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    full = with_margins(counts)
    return released_table(full, suppression_mask(full, k), rows, columns, k)


def released_table(
    full: np.ndarray, hidden: np.ndarray, rows: list[str], columns: list[str], k: int
) -> SuppressedTable:
    """A table with margins (`with_margins`) as released under the mask `hidden`."""
    shown: list[list[int | None]] = [
        [None if hidden[i, j] else int(full[i, j]) for j in range(full.shape[1])] for i in range(full.shape[0])
    ]
    n_rows, n_cols = full.shape[0] - 1, full.shape[1] - 1
    return SuppressedTable(
        rows=list(rows),
        columns=list(columns),
        cells=[shown[i][:n_cols] for i in range(n_rows)],
        row_totals=[shown[i][n_cols] for i in range(n_rows)],
        column_totals=shown[n_rows][:n_cols],
        total=shown[n_rows][n_cols],
        k=k,
    )


# -- the exact check ------------------------------------------------------------------------------


def _equations(values: np.ndarray, hidden: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The hidden entries as unknowns u, and the line sums as A u = b (published entries moved to b)."""
    unknown = [(int(i), int(j)) for i, j in np.argwhere(hidden)]
    position = {ij: n for n, ij in enumerate(unknown)}
    equations: list[np.ndarray] = []
    targets: list[float] = []
    for rows, cols, total in _lines(values.shape):
        coefficients = np.zeros(len(unknown))
        constant = 0.0
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if hidden[i, j]:
                coefficients[position[(i, j)]] += 1.0
            else:
                constant += float(values[i, j])
        if hidden[total]:
            coefficients[position[total]] -= 1.0
        else:
            constant -= float(values[total])
        if coefficients.any():
            equations.append(coefficients)
            targets.append(-constant)
    a = np.array(equations) if equations else np.zeros((0, len(unknown)))
    return unknown, a, np.array(targets)


def derivable(full: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Which hidden entries the published ones pin to a single value, exactly, with one LP:

    - entries that are 0 in every table consistent with the publication: the complement of the largest
      possible support, found by one LP over the homogenised cone (maximise how many entries can be >= 1
      in a scaled solution);
    - entries the line sums pin once those zeros are fixed. Every entry sits in exactly two lines (its row
      and its column, totals included), so with totals counted negatively every line sums to zero and
      the equations are the incidence matrix of the bipartite line graph: their null space is its cycle
      space, and an entry is pinned exactly when it is a bridge of the graph of the remaining entries."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, hstack, identity

    unknown, a, b = _equations(full, hidden)
    pinned = np.zeros_like(hidden)
    n = len(unknown)
    if n == 0:
        return pinned
    m = a.shape[0]
    # Variables [u (n), y (n), s]: maximise sum(y) with A u = b s, y <= u, 0 <= y <= 1, u >= 0, s >= 1.
    c = np.concatenate([np.zeros(n), -np.ones(n), [0.0]])
    a_eq = hstack([csr_matrix(a), csr_matrix((m, n)), csr_matrix(-b.reshape(-1, 1))]).tocsr() if m else None
    a_ub = hstack([-identity(n), identity(n), csr_matrix((n, 1))]).tocsr()
    bounds = [(0, None)] * n + [(0, 1)] * n + [(1, None)]
    result = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=np.zeros(m) if m else None, bounds=bounds)
    if result.status != 0:  # pragma: no cover - the true table is always a solution
        raise RuntimeError(f"suppression check failed: {result.message}")
    support = result.x[n : 2 * n] > 0.5
    n_rows = full.shape[0]
    edges = []
    for index, (i, j) in enumerate(unknown):
        if support[index]:
            edges.append((i, n_rows + j))
        else:
            pinned[i, j] = True
    for i, node in _bridges(full.shape[0] + full.shape[1], edges):
        pinned[i, node - n_rows] = True
    return pinned


def _hide_partner(full: np.ndarray, hidden: np.ndarray, i: int, j: int) -> None:
    """Hide the smallest published entry sharing a line with (i, j): a cell before a total."""
    n_rows, n_cols = full.shape[0] - 1, full.shape[1] - 1
    candidates: list[tuple[bool, int, int, int]] = []
    for jj in range(n_cols + 1):
        if not hidden[i, jj]:
            candidates.append((jj == n_cols or i == n_rows, int(full[i, jj]), i, jj))
    for ii in range(n_rows + 1):
        if not hidden[ii, j]:
            candidates.append((ii == n_rows or j == n_cols, int(full[ii, j]), ii, j))
    if candidates:
        _, _, ii, jj = min(candidates)
        hidden[ii, jj] = True
    else:  # both lines fully hidden: its totals' lines must open up; hide the smallest published entry
        published = np.argwhere(~hidden)
        if len(published):
            values = [full[int(a), int(b)] for a, b in published]
            a, b = published[int(np.argmin(values))]
            hidden[int(a), int(b)] = True


# -- the two rules --------------------------------------------------------------------------------


def _lines(shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """Each line as (row indices, column indices) of its parts, and the index of its total."""
    n_rows, n_cols = shape[0] - 1, shape[1] - 1
    lines = []
    for i in range(n_rows + 1):
        lines.append((np.full(n_cols, i), np.arange(n_cols), (i, n_cols)))
    for j in range(n_cols + 1):
        lines.append((np.arange(n_rows), np.full(n_rows, j), (n_rows, j)))
    return lines


def _protect_residuals(full: np.ndarray, hidden: np.ndarray, k: int) -> bool:
    changed = False
    for rows, cols, total in _lines(full.shape):
        if hidden[total]:
            continue
        part_hidden = hidden[rows, cols]
        if not part_hidden.any():
            continue
        residual = int(full[rows, cols][part_hidden].sum())
        if residual >= k and part_hidden.sum() >= 2:
            continue
        candidates = np.flatnonzero(~part_hidden)
        if len(candidates) == 0:  # every part hidden: the total itself must go
            hidden[total] = True
        else:
            # Prefer a partner whose other line already hides exactly one entry (one hide mends two lines),
            # then one whose other line hides some, then the smallest count: least information lost.
            row_line = bool((rows == rows[0]).all())
            crossing = hidden[:, cols[candidates]].sum(axis=0) if row_line else hidden[rows[candidates], :].sum(axis=1)
            rank = np.where(crossing == 1, 0, np.where(crossing >= 2, 1, 2))
            order = np.lexsort((full[rows[candidates], cols[candidates]], rank))
            pick = candidates[order[0]]
            hidden[rows[pick], cols[pick]] = True
        changed = True
    return changed


def _break_bridges(full: np.ndarray, hidden: np.ndarray) -> bool:
    """Hide one more entry across every bridge of the hidden-entry graph (rows and columns as nodes)."""
    n_rows = full.shape[0]
    edges = [(int(i), n_rows + int(j)) for i, j in zip(*np.nonzero(hidden), strict=True)]
    changed = False
    for row, col_node in _bridges(full.shape[0] + full.shape[1], edges):
        col = col_node - n_rows
        if not hidden[row, col]:
            continue
        side = _component_without(full.shape[0] + full.shape[1], edges, (row, col_node), row)
        rows_a = [r for r in range(n_rows) if r in side]
        cols_a = [c for c in range(full.shape[1]) if n_rows + c in side]
        rows_b = [r for r in range(n_rows) if r not in side]
        cols_b = [c for c in range(full.shape[1]) if n_rows + c not in side]
        best: tuple[int, int] | None = None
        for rs, cs in ((rows_a, cols_b), (rows_b, cols_a)):
            if not rs or not cs:
                continue
            block = full[np.ix_(rs, cs)].astype(float)
            block[hidden[np.ix_(rs, cs)]] = np.inf
            flat = int(np.argmin(block))
            if np.isfinite(block.flat[flat]) and (best is None or block.flat[flat] < full[best]):
                best = (rs[flat // len(cs)], cs[flat % len(cs)])
        if best is None:  # no entry crosses: widen the row's side and let the next pass close the cycle
            open_cols = np.flatnonzero(~hidden[row])
            if len(open_cols) == 0:
                continue
            best = (row, int(open_cols[np.argmin(full[row, open_cols])]))
        hidden[best] = True
        return True  # the graph changed: recompute the bridges
    return changed


def _bridges(n_nodes: int, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Bridges of an undirected multigraph (iterative Tarjan: tables can be larger than the recursion limit)."""
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n_nodes)]
    for index, (a, b) in enumerate(edges):
        adjacency[a].append((b, index))
        adjacency[b].append((a, index))
    order = [-1] * n_nodes
    low = [0] * n_nodes
    found: list[tuple[int, int]] = []
    counter = 0
    for root in range(n_nodes):
        if order[root] != -1 or not adjacency[root]:
            continue
        order[root] = low[root] = counter
        counter += 1
        stack: list[tuple[int, int, int]] = [(root, -1, 0)]  # node, edge used to arrive, next neighbour index
        while stack:
            node, via, position = stack[-1]
            if position < len(adjacency[node]):
                stack[-1] = (node, via, position + 1)
                neighbour, edge = adjacency[node][position]
                if edge == via:
                    continue
                if order[neighbour] == -1:
                    order[neighbour] = low[neighbour] = counter
                    counter += 1
                    stack.append((neighbour, edge, 0))
                else:
                    low[node] = min(low[node], order[neighbour])
            else:
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[node])
                    if low[node] > order[parent]:
                        found.append(edges[via])
    return found


def _component_without(n_nodes: int, edges: list[tuple[int, int]], removed: tuple[int, int], start: int) -> set[int]:
    adjacency: list[list[int]] = [[] for _ in range(n_nodes)]
    skipped = False
    for a, b in edges:
        if not skipped and (a, b) == removed:
            skipped = True
            continue
        adjacency[a].append(b)
        adjacency[b].append(a)
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for neighbour in adjacency[node]:
            if neighbour not in seen:
                seen.add(neighbour)
                frontier.append(neighbour)
    return seen


# -- joint suppression of linked tables -----------------------------------------------------------

Entry = tuple[int, int, int]  # (table, row, column) in the table with margins


@dataclass(frozen=True, slots=True)
class Link:
    """An equation between tables released together: sum(plus) == sum(minus), over their entries (margins
    included). Example: a day's origin-destination row total of a coarse cell equals the sum of the day's
    departure row totals of the finer areas inside it."""

    plus: tuple[Entry, ...]
    minus: tuple[Entry, ...]

    def holds(self, fulls: list[np.ndarray]) -> bool:
        return sum(int(fulls[t][i, j]) for t, i, j in self.plus) == sum(int(fulls[t][i, j]) for t, i, j in self.minus)


def suppress_jointly(fulls: list[np.ndarray], links: list[Link], k: int) -> list[np.ndarray]:
    """Hidden masks for tables with margins that are released together and linked by `links`: no entry
    below k, and no hidden entry of any table pinned to one value by everything published in all of them
    (every table's line equations, every link, non-negativity). Each table is first suppressed on its own
    (the fast exact rules above); then the joint system is checked exactly (`joint_derivable`), every
    pinned entry gets a published partner from one of its equations hidden, the tables it touched are
    made safe on their own again, and the check repeats."""
    for link in links:
        if not link.holds(fulls):
            raise ValueError(f"the link {link} does not hold on the tables: it would mislead the audit")
    masks = [suppression_mask(full, k) for full in fulls]
    by_entry: dict[Entry, list[Link]] = {}
    for link in links:
        for entry in set(link.plus + link.minus):
            by_entry.setdefault(entry, []).append(link)
    while True:
        pinned = joint_derivable(fulls, masks, links)
        if not pinned:
            return masks
        touched: set[int] = set()
        before = sum(int(mask.sum()) for mask in masks)
        hidden_now: set[Entry] = set()
        for entry in pinned:
            # One partner per neighbourhood per round: entries pinned together (a whole row pinned at 0 by a
            # link) are usually freed by one hide, and a partner for each would over-suppress.
            t, i, j = entry
            near = {e for link in by_entry.get(entry, []) for e in link.plus + link.minus}
            if any(e[0] == t and (e[1] == i or e[2] == j) for e in hidden_now) or near & hidden_now:
                continue
            snapshot = [mask.copy() for mask in masks]
            touched.add(_hide_joint_partner(fulls, masks, by_entry, entry))
            for table, (old, new) in enumerate(zip(snapshot, masks, strict=True)):
                hidden_now |= {(table, int(a), int(b)) for a, b in np.argwhere(old != new)}
            hidden_now.add(entry)
        if sum(int(mask.sum()) for mask in masks) == before:  # pragma: no cover - everything already hidden
            raise RuntimeError("joint suppression cannot protect these tables: nothing left to hide")
        for table in touched:
            masks[table] = suppression_mask(fulls[table], k, masks[table])


def joint_equations(
    fulls: list[np.ndarray], masks: list[np.ndarray], links: list[Link]
) -> tuple[list[Entry], Any, np.ndarray]:
    """Hidden entries of all tables as unknowns u, every line and link as rows of A u = b (sparse A)."""
    from scipy.sparse import coo_matrix

    unknown: list[Entry] = [(t, int(i), int(j)) for t, mask in enumerate(masks) for i, j in np.argwhere(mask)]
    position = {e: n for n, e in enumerate(unknown)}
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    targets: list[float] = []

    def add(terms: list[tuple[Entry, float]]) -> None:
        constant = 0.0
        coefficients: dict[int, float] = {}
        for (t, i, j), sign in terms:
            if masks[t][i, j]:
                n = position[(t, i, j)]
                coefficients[n] = coefficients.get(n, 0.0) + sign
            else:
                constant += sign * float(fulls[t][i, j])
        coefficients = {n: c for n, c in coefficients.items() if c != 0.0}
        if coefficients:
            row = len(targets)
            for n, c in coefficients.items():
                rows.append(row)
                cols.append(n)
                data.append(c)
            targets.append(-constant)

    for t, (full, mask) in enumerate(zip(fulls, masks, strict=True)):
        for line_rows, line_cols, total in _lines(full.shape):
            if not (mask[line_rows, line_cols].any() or mask[total]):
                continue  # fully published: no unknown
            terms: list[tuple[Entry, float]] = [
                ((t, i, j), 1.0) for i, j in zip(line_rows.tolist(), line_cols.tolist(), strict=True)
            ]
            terms.append(((t, *total), -1.0))
            add(terms)
    for link in links:
        add([(e, 1.0) for e in link.plus] + [(e, -1.0) for e in link.minus])
    a = coo_matrix((data, (rows, cols)), shape=(len(targets), len(unknown))).tocsr()
    return unknown, a, np.array(targets)


def joint_derivable(fulls: list[np.ndarray], masks: list[np.ndarray], links: list[Link]) -> list[Entry]:
    """The hidden entries pinned to a single value by the published ones, exactly: entries that are 0 in
    every consistent release (one LP over the homogenised cone, as in `derivable`), then entries constant on
    the affine hull of the rest (a unit vector in the row space of the equations, `_in_row_space`): the set of
    consistent releases has a relative-interior point, so an entry not pinned there takes a range of values."""
    unknown, a, b = joint_equations(fulls, masks, links)
    n = len(unknown)
    if n == 0:
        return []
    support = _support(a, b)
    pinned = [unknown[i] for i in np.flatnonzero(~support)]
    free = np.flatnonzero(support)
    if len(free):
        sub = a[:, free].tocsr()
        sub = sub[np.flatnonzero(np.diff(sub.indptr) > 0)]
        if sub.shape[0]:
            pinned += [unknown[int(free[i])] for i in np.flatnonzero(_in_row_space(sub))]
    return pinned


def _in_row_space(a: Any) -> np.ndarray:
    """Which unit vectors e_i lie in the row space of sparse A: exactly those on which every null-space
    vector vanishes. Two random vectors are projected onto the null space (w - A^T y, y the least-squares
    solution of A^T y = w by LSQR: sparse products only; a dense QR or SVD of a day's 200 x 3,000 system
    costs seconds when BLAS threads fight over two cores); a coordinate is free when either projection is
    clearly non-zero there. A free coordinate that both draws miss is taken as pinned: the error, with
    probability near zero, only ever hides one entry more."""
    from scipy.sparse.linalg import lsqr

    transposed = a.T.tocsr()
    rng = np.random.default_rng(0)
    free = np.zeros(a.shape[1], dtype=bool)
    for _ in range(2):
        w = rng.standard_normal(a.shape[1])
        y = lsqr(transposed, w, atol=1e-14, btol=1e-14, iter_lim=20 * (a.shape[0] + a.shape[1]))[0]
        free |= np.abs(w - transposed @ y) > 1e-6
    return ~free


def _support(a: Any, b: np.ndarray) -> np.ndarray:
    """Which unknowns can be positive in some solution of A u = b, u >= 0 (one LP)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, hstack, identity

    m, n = a.shape
    c = np.concatenate([np.zeros(n), -np.ones(n), [0.0]])
    a_eq = hstack([a, csr_matrix((m, n)), csr_matrix(-b.reshape(-1, 1))]).tocsr() if m else None
    a_ub = hstack([-identity(n), identity(n), csr_matrix((n, 1))]).tocsr()
    bounds = [(0, None)] * n + [(0, 1)] * n + [(1, None)]
    result = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=np.zeros(m) if m else None, bounds=bounds)
    if result.status != 0:  # pragma: no cover - the true tables are always a solution
        raise RuntimeError(f"joint suppression check failed: {result.message}")
    return np.asarray(result.x[n : 2 * n] > 0.5)


def _hide_joint_partner(
    fulls: list[np.ndarray], masks: list[np.ndarray], by_entry: dict[Entry, list[Link]], entry: Entry
) -> int:
    """Hide the smallest published entry sharing an equation (its row, its column, a link) with `entry`: a
    cell before a total, a link term first; when every equation around it is hidden already, the nearest
    published entry through the hidden ones (breadth first). Returns the table of the entry hidden."""

    def neighbours(e: Entry) -> list[Entry]:
        t, i, j = e
        full = fulls[t]
        out = [(t, i, jj) for jj in range(full.shape[1])] + [(t, ii, j) for ii in range(full.shape[0])]
        for link in by_entry.get(e, []):
            out += list(link.plus + link.minus)
        return out

    def rank(e: Entry) -> tuple[bool, bool, int]:
        # Cells before totals (a hidden total costs every user); among those, a term of a link first: the
        # pins left by suppression table by table come through the links, and one more hidden term opens one.
        f = fulls[e[0]]
        return (e[1] == f.shape[0] - 1 or e[2] == f.shape[1] - 1, e not in by_entry, int(f[e[1], e[2]]))

    seen = {entry}
    frontier = [entry]
    while frontier:
        around = {n for e in frontier for n in neighbours(e)} - seen
        published = [e for e in around if not masks[e[0]][e[1], e[2]]]
        if published:
            best = min(published, key=rank)
            masks[best[0]][best[1], best[2]] = True
            return best[0]
        seen |= around
        frontier = sorted(around)
    return entry[0]
