"""A sparse linear program with named rows and columns, solved by HiGHS.

This module is the one boundary to the solver: highspy is imported here only, and its
statuses become `LpStatus` or `SolverError` here. Variables and rows are added in blocks
(numpy arrays), so building a 100-DER x 96-interval plan costs milliseconds, not seconds.
Every block carries a label; after a solve, `binding()` names the rows and bounds whose
dual value is not zero, which is how a curtailed plan says *what* limited it.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
from numpy.typing import ArrayLike, NDArray

from gateway.errors import SolverError

INF = float("inf")
#: a row or column block's name: any object (the flex LPs use reasons.Tag), or a function of
#: the position in the block returning one
Label = object | Callable[[int], object]
Index = NDArray[np.int64]
Floats = NDArray[np.float64]


class LpStatus(enum.StrEnum):
    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class _Block:
    start: int
    count: int
    label: Label

    def name(self, i: int) -> object:
        return self.label(i - self.start) if callable(self.label) else self.label


class _Names:
    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.starts: list[int] = []

    def add(self, start: int, count: int, label: Label) -> None:
        self.blocks.append(_Block(start, count, label))
        self.starts.append(start)

    def of(self, i: int) -> object:
        k = bisect.bisect_right(self.starts, i) - 1
        return self.blocks[k].name(i)


def _vector(value: ArrayLike, n: int, what: str) -> Floats:
    if isinstance(value, float | int):
        arr = np.full(n, float(value))
    else:
        arr = np.array(value, dtype=np.float64).reshape(-1)
        if arr.size == 1 and n != 1:
            arr = np.full(n, arr[0])
        elif arr.size != n:
            raise ValueError(f"{what}: {arr.size} values for {n} entries")
    if np.isnan(arr).any():
        raise ValueError(f"{what}: NaN in LP data")
    return arr


#: blocks up to this size are kept as Python lists until the solve: a dispatch LP adds a
#: hundred one-entry blocks, and a numpy array per block cost more than the solve itself
SMALL = 16

#: a block of bounds, costs or coefficients: an array, or a short list
Chunk = Floats | list[float]
IntChunk = NDArray[np.int64] | list[int]


def _listed(value: ArrayLike) -> list[Any] | None:
    """A scalar or a short sequence as a list; None for anything else (the array path)."""
    if isinstance(value, float | int | np.floating | np.integer):
        return [value]
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist() if value.size <= SMALL else None
    if isinstance(value, list | tuple) and len(value) <= SMALL:
        return list(value)
    return None


def _number(value: float, what: str) -> float:
    if math.isnan(value):
        raise ValueError(f"{what}: NaN in LP data")
    return float(value)


def _joined(chunks: list[Chunk]) -> Floats:
    if not chunks:
        return np.zeros(0)
    return np.concatenate(chunks).astype(np.float64, copy=False)


@dataclass(frozen=True)
class LpSolution:
    status: LpStatus
    objective: float
    x: Floats
    row_activity: Floats
    row_dual: Floats
    col_dual: Floats
    row_bounds: tuple[Floats, Floats]
    col_bounds: tuple[Floats, Floats]
    _rows: _Names
    _cols: _Names

    @property
    def optimal(self) -> bool:
        return self.status is LpStatus.OPTIMAL

    def value(self, cols: Index) -> Floats:
        return self.x[cols]

    def binding(self, min_dual: float = 1e-7, max_dual: float = INF) -> list[tuple[object, bool]]:
        """Names of the rows and column bounds whose dual magnitude lies in
        (min_dual, max_dual), each with True when its upper side binds; distinct, in model
        order. The dual is what relaxing the limit by one unit would save, so a window of
        magnitudes selects the limits that matter for one objective term."""
        names: dict[tuple[object, bool], None] = {}
        rd, cd = np.abs(self.row_dual), np.abs(self.col_dual)
        lo, hi = self.row_bounds
        for i in np.flatnonzero((rd > min_dual) & (rd < max_dual)):
            upper = abs(self.row_activity[i] - hi[i]) < abs(self.row_activity[i] - lo[i])
            names.setdefault((self._rows.of(int(i)), bool(upper)), None)
        lo, hi = self.col_bounds
        for j in np.flatnonzero((cd > min_dual) & (cd < max_dual)):
            upper = abs(self.x[j] - hi[j]) < abs(self.x[j] - lo[j])
            names.setdefault((self._cols.of(int(j)), bool(upper)), None)
        return list(names)


class Lp:
    """min c'x  s.t.  row_lo <= A x <= row_hi,  col_lo <= x <= col_hi."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._col_lo: list[Chunk] = []
        self._col_hi: list[Chunk] = []
        self._cost: list[Chunk] = []
        self._row_lo: list[Chunk] = []
        self._row_hi: list[Chunk] = []
        self._a_rows: list[IntChunk] = []
        self._a_cols: list[IntChunk] = []
        self._a_vals: list[Chunk] = []
        self._cols = _Names()
        self._rows = _Names()
        self.num_cols = 0
        self.num_rows = 0

    def add_vars(
        self,
        n: int,
        lo: ArrayLike = 0.0,
        hi: ArrayLike = INF,
        cost: ArrayLike = 0.0,
        label: Label = "",
    ) -> Index:
        if n <= SMALL and isinstance(lo, float | int) and isinstance(hi, float | int):
            self._scalar_bounds(n, float(lo), float(hi), label)
        else:
            lo_v, hi_v = _vector(lo, n, self.name), _vector(hi, n, self.name)
            if (lo_v > hi_v + 1e-9).any():
                k = int(np.argmax(lo_v > hi_v + 1e-9))
                name = _Block(0, n, label).name(k)
                raise ValueError(f"{self.name}: {name}: lower bound {lo_v[k]} above {hi_v[k]}")
            self._col_lo.append(lo_v)
            self._col_hi.append(np.maximum(hi_v, lo_v))
        if n <= SMALL and isinstance(cost, float | int):
            self._cost.append([_number(cost, f"{self.name} cost")] * n)
        else:
            self._cost.append(_vector(cost, n, f"{self.name} cost"))
        self._cols.add(self.num_cols, n, label)
        idx = np.arange(self.num_cols, self.num_cols + n, dtype=np.int64)
        self.num_cols += n
        return idx

    def _scalar_bounds(self, n: int, lo: float, hi: float, label: Label) -> None:
        """The same bounds for a few columns, without an array per block."""
        _number(lo, self.name)
        _number(hi, self.name)
        if lo > hi + 1e-9:
            name = _Block(0, n, label).name(0)
            raise ValueError(f"{self.name}: {name}: lower bound {lo} above {hi}")
        self._col_lo.append([lo] * n)
        self._col_hi.append([max(hi, lo)] * n)

    def add_rows(
        self, n: int, lo: ArrayLike = -INF, hi: ArrayLike = INF, label: Label = ""
    ) -> Index:
        for bounds, value in ((self._row_lo, lo), (self._row_hi, hi)):
            if n <= SMALL and isinstance(value, float | int):
                bounds.append([_number(value, f"{self.name} row")] * n)
            else:
                bounds.append(_vector(value, n, f"{self.name} row"))
        self._rows.add(self.num_rows, n, label)
        idx = np.arange(self.num_rows, self.num_rows + n, dtype=np.int64)
        self.num_rows += n
        return idx

    def coef(self, rows: ArrayLike, cols: ArrayLike, vals: ArrayLike) -> None:
        """Add coefficients A[rows, cols] += vals (a single value repeats to the others'
        length)."""
        r, c, v = _listed(rows), _listed(cols), _listed(vals)
        if r is not None and c is not None and v is not None:
            n = max(len(r), len(c), len(v))
            if {len(r), len(c), len(v)} - {1, n}:
                raise ValueError(f"{self.name}: coefficient arrays of {len(r)}, {len(c)}, {len(v)}")
            self._a_rows.append([int(x) for x in r] * (n if len(r) == 1 else 1))
            self._a_cols.append([int(x) for x in c] * (n if len(c) == 1 else 1))
            self._a_vals.append([float(x) for x in v] * (n if len(v) == 1 else 1))
            return
        ra = np.array(rows, dtype=np.int64).reshape(-1)
        ca = np.array(cols, dtype=np.int64).reshape(-1)
        va = np.array(vals, dtype=np.float64).reshape(-1)
        n = max(ra.size, ca.size, va.size)
        if {ra.size, ca.size, va.size} - {1, n}:
            raise ValueError(f"{self.name}: coefficient arrays of {ra.size}, {ca.size}, {va.size}")
        self._a_rows.append(ra if ra.size == n else np.full(n, ra[0], dtype=np.int64))
        self._a_cols.append(ca if ca.size == n else np.full(n, ca[0], dtype=np.int64))
        self._a_vals.append(va if va.size == n else np.full(n, va[0]))

    def _matrix(self) -> tuple[NDArray[np.int32], NDArray[np.int32], Floats]:
        if not self._a_rows:
            return np.zeros(self.num_rows + 1, np.int32), np.zeros(0, np.int32), np.zeros(0)
        rows = np.concatenate(self._a_rows).astype(np.int64, copy=False)
        cols = np.concatenate(self._a_cols).astype(np.int64, copy=False)
        vals = np.concatenate(self._a_vals).astype(np.float64, copy=False)
        if rows.size and (rows.max() >= self.num_rows or cols.max() >= self.num_cols):
            raise ValueError(f"{self.name}: coefficient outside the model")
        key = rows * max(self.num_cols, 1) + cols
        uniq, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse, weights=vals, minlength=uniq.size)
        keep = summed != 0.0
        uniq, summed = uniq[keep], summed[keep]
        r = uniq // max(self.num_cols, 1)
        c = uniq % max(self.num_cols, 1)
        start = np.zeros(self.num_rows + 1, dtype=np.int64)
        np.add.at(start, r + 1, 1)
        return np.cumsum(start).astype(np.int32), c.astype(np.int32), summed

    def solve(self, time_limit_s: float = 30.0) -> LpSolution:
        if self.num_cols == 0:
            raise SolverError(self.name, "no variables")
        start, index, value = self._matrix()
        lp = highspy.HighsLp()
        lp.num_col_ = self.num_cols
        lp.num_row_ = self.num_rows
        lp.col_cost_ = _joined(self._cost)
        lp.col_lower_ = _joined(self._col_lo)
        lp.col_upper_ = _joined(self._col_hi)
        lp.row_lower_ = _joined(self._row_lo)
        lp.row_upper_ = _joined(self._row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_ = self.num_cols
        lp.a_matrix_.num_row_ = self.num_rows
        lp.a_matrix_.start_ = start
        lp.a_matrix_.index_ = index
        lp.a_matrix_.value_ = value
        # the low-level class: the high-level wrapper prints a banner on construction
        solver = highspy._Highs()  # type: ignore[attr-defined]
        try:
            solver.setOptionValue("output_flag", False)
            solver.setOptionValue("time_limit", float(time_limit_s))
            if solver.passModel(lp) != highspy.HighsStatus.kOk:
                raise SolverError(self.name, "the solver refused the model")
            solver.run()
            status = solver.getModelStatus()
            if status == highspy.HighsModelStatus.kInfeasible:
                empty = np.zeros(0)
                return LpSolution(
                    LpStatus.INFEASIBLE,
                    INF,
                    empty,
                    empty,
                    empty,
                    empty,
                    (empty, empty),
                    (empty, empty),
                    self._rows,
                    self._cols,
                )
            if status != highspy.HighsModelStatus.kOptimal:
                raise SolverError(self.name, solver.modelStatusToString(status))
            sol = solver.getSolution()
            return LpSolution(
                LpStatus.OPTIMAL,
                float(solver.getInfo().objective_function_value),
                np.asarray(sol.col_value, dtype=np.float64),
                np.asarray(sol.row_value, dtype=np.float64),
                np.asarray(sol.row_dual, dtype=np.float64),
                np.asarray(sol.col_dual, dtype=np.float64),
                (np.asarray(lp.row_lower_), np.asarray(lp.row_upper_)),
                (np.asarray(lp.col_lower_), np.asarray(lp.col_upper_)),
                self._rows,
                self._cols,
            )
        finally:
            solver.clear()
