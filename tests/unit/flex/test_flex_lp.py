from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import SolverError
from gateway.flex.lp import Lp, LpStatus


def test_solves_and_names_the_binding_limits_with_their_side() -> None:
    lp = Lp("t")
    x = lp.add_vars(2, 0.0, [0.3, 10.0], [1.0, 2.0], label=lambda i: f"x{i}")
    demand = lp.add_rows(1, 1.0, label="demand")
    lp.coef(demand, x, 1.0)
    sol = lp.solve()
    assert sol.status is LpStatus.OPTIMAL
    assert sol.x == pytest.approx([0.3, 0.7])
    assert sol.objective == pytest.approx(1.7)
    # x0 sits at its upper bound (cheaper), the demand row at its lower bound
    assert set(sol.binding()) == {("demand", False), ("x0", True)}
    # a window of dual magnitudes selects what matters for one objective tier
    assert sol.binding(1.5) == [("demand", False)]


def test_infeasible_is_a_status_not_an_error() -> None:
    lp = Lp("t")
    x = lp.add_vars(2, 0.0, [0.3, 0.2])
    row = lp.add_rows(1, 1.0)
    lp.coef(row, x, 1.0)
    assert lp.solve().status is LpStatus.INFEASIBLE


def test_repeated_coefficients_add_up() -> None:
    lp = Lp("t")
    x = lp.add_vars(1, 0.0, 10.0, -1.0)
    row = lp.add_rows(1, -np.inf, 6.0)
    lp.coef(row, x, 1.0)
    lp.coef(row, x, 2.0)  # 3x <= 6
    assert lp.solve().x[0] == pytest.approx(2.0)


def test_bad_data_is_refused_with_the_block_named() -> None:
    lp = Lp("plan")
    with pytest.raises(ValueError, match=r"battery: lower bound 2\.0 above 1\.0"):
        lp.add_vars(1, 2.0, 1.0, label="battery")
    with pytest.raises(ValueError, match="NaN"):
        lp.add_vars(1, float("nan"), 1.0)
    with pytest.raises(SolverError, match="no variables"):
        Lp("empty").solve()
    lp = Lp("t")
    lp.add_vars(1)
    lp.coef([5], [0], 1.0)
    with pytest.raises(ValueError, match="outside the model"):
        lp.solve()


def test_one_entry_blocks_build_the_model_whole_blocks_build() -> None:
    """A dispatch adds its LP entry by entry (kept as lists until the solve), a plan in
    arrays: the same model either way."""
    n = 40  # beyond the size kept as a list
    rng = np.random.default_rng(7)
    hi, cost, cap = rng.uniform(1, 5, n), rng.uniform(-3, -1, n), rng.uniform(10, 20, 3)
    whole = Lp("whole")
    x = whole.add_vars(n, 0.0, hi, cost)
    rows = whole.add_rows(3, -np.inf, cap)
    for k in range(3):
        whole.coef(rows[k], x[k::3], 1.0)
    one = Lp("one")
    xs = [int(one.add_vars(1, 0.0, float(hi[i]), float(cost[i]))[0]) for i in range(n)]
    for k in range(3):
        row = one.add_rows(1, -np.inf, float(cap[k]))
        for i in xs[k::3]:
            one.coef(row, i, 1.0)
    a, b = whole.solve(), one.solve()
    assert a.objective == pytest.approx(b.objective)
    assert np.allclose(a.x, b.x)


def test_bad_one_entry_data_is_refused() -> None:
    lp = Lp("dispatch")
    with pytest.raises(ValueError, match="NaN"):
        lp.add_vars(1, 0.0, 1.0, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        lp.add_rows(1, float("nan"), 1.0)
    x = lp.add_vars(2)
    with pytest.raises(ValueError, match="coefficient arrays of 1, 2, 3"):
        lp.coef(0, x, [1.0, 2.0, 3.0])
