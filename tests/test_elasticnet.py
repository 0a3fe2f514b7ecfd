"""The batched elastic-net engine equals scikit-learn (same grid and folds), to 1e-6.

scikit-learn is run with a tight tolerance (its default ``tol=1e-4`` stops the coordinate
descent at a duality gap that moves coefficients by ~1e-4); the engine's solutions are exact to
rounding on the support (tests/test_predict.py checks the old defaults' agreement).
"""

import itertools

import numpy as np
import pytest
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, LeaveOneOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ketflow.group.elasticnet import fit_at, penalty_search
from ketflow.group.predict import ModelSpec, design_matrix, fit_model, nested_cv_predictions
from ketflow.group.synthetic import ARMS, synthetic_change_table

OUTCOME = "caps5_total__change"
RATIOS = (0.1, 0.5, 0.9, 1.0)
TIGHT = {"tol": 1e-13, "max_iter": 1_000_000}


def _sklearn_cv(X, y, folds, ratios=RATIOS, n_alphas=40):
    return ElasticNetCV(l1_ratio=list(ratios), alphas=n_alphas, cv=folds, **TIGHT).fit(X, y)


def _standardised(n, p, seed, correlated=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if correlated:
        X[:, 1] += X[:, 0]
    X = StandardScaler().fit_transform(X)
    y = 3 * X[:, 0] - 2 * X[:, 2] + rng.normal(size=n) * 2 + 10
    return X, y


@pytest.mark.parametrize("n, p, cv", [(24, 6, "loo"), (30, 12, "kfold"), (16, 40, "loo"), (20, 45, "kfold")])
def test_penalty_search_and_refit_equal_elasticnetcv(n, p, cv):
    X, y = _standardised(n, p, seed=n + p)
    splitter = LeaveOneOut() if cv == "loo" else KFold(5, shuffle=True, random_state=1)
    folds = list(splitter.split(X))
    search = penalty_search(X, y[:, None], folds, RATIOS, 40)
    W, intercept, failures = fit_at(X, y[:, None], search, RATIOS)
    ref = _sklearn_cv(X, y, folds)
    assert search.failures == failures == 0
    np.testing.assert_allclose(search.alphas[0], ref.alphas_, rtol=1e-12)
    np.testing.assert_allclose(search.cv_mse[0], ref.mse_path_.mean(axis=-1), rtol=1e-6)
    assert search.alpha[0] == pytest.approx(ref.alpha_, rel=1e-12) and search.l1_ratio[0] == ref.l1_ratio_
    np.testing.assert_allclose(W[0], ref.coef_, atol=1e-6 * np.abs(ref.coef_).max())
    assert intercept[0] == pytest.approx(ref.intercept_, abs=1e-6 * abs(ref.intercept_))
    np.testing.assert_allclose(X @ W[0] + intercept[0], ref.predict(X), rtol=1e-6, atol=1e-6)
    assert search.min_mse[0] == pytest.approx(ref.mse_path_.mean(axis=-1).min(), rel=1e-6)


def test_many_outcomes_at_once_equal_one_at_a_time():
    X, y = _standardised(25, 8, seed=3)
    rng = np.random.default_rng(0)
    Y = np.column_stack([y] + [y[rng.permutation(25)] for _ in range(5)])
    folds = list(KFold(5, shuffle=True, random_state=0).split(X))
    batch = penalty_search(X, Y, folds, RATIOS, 30)
    W, b0, _ = fit_at(X, Y, batch, RATIOS)
    for k in range(Y.shape[1]):
        one = penalty_search(X, Y[:, [k]], folds, RATIOS, 30)
        Wk, bk, _ = fit_at(X, Y[:, [k]], one, RATIOS)
        np.testing.assert_allclose(one.cv_mse[0], batch.cv_mse[k], rtol=1e-12)  # matrix products may
        np.testing.assert_allclose(Wk[0], W[k], rtol=1e-10, atol=1e-12)         # round differently
        assert bk[0] == pytest.approx(b0[k], rel=1e-12)


def test_constant_outcome_and_constant_column():
    X, y = _standardised(20, 5, seed=1)
    X[:, 3] = 0.0  # constant after standardisation: never selected, as in scikit-learn
    folds = list(KFold(4, shuffle=True, random_state=0).split(X))
    search = penalty_search(X, np.column_stack([y, np.full(20, 2.0)]), folds, RATIOS, 10)
    W, b0, _ = fit_at(X, np.column_stack([y, np.full(20, 2.0)]), search, RATIOS)
    ref = _sklearn_cv(X, y, folds, n_alphas=10)
    np.testing.assert_allclose(W[0], ref.coef_, atol=1e-6)
    assert W[0, 3] == 0 and np.all(W[1] == 0) and b0[1] == 2.0


def _table(n=36, p=5, seed=4):
    table = synthetic_change_table(n=n, p=p, seed=seed)
    table[OUTCOME] += 0.4 * table["age"]
    return table


def _direct_fit(X, y, arm, feats, covariates, folds, ratios, n_alphas):
    """The reference pipeline written out with scikit-learn: interactions at training means,
    residualise on [1, unpenalised], StandardScaler, ElasticNetCV, least-squares unpenalised part."""
    X = np.asarray(X, float)
    cols = [X]
    if arm is not None:
        cols.append(X[:, [arm]] * (X[:, feats] - X[:, feats].mean(axis=0)))
    full = np.hstack(cols)
    pen = [j for j in range(full.shape[1]) if j not in covariates]
    Z = np.column_stack([np.ones(len(y)), full[:, covariates]])
    res = np.column_stack([y, full[:, pen]])
    res = res - Z @ np.linalg.lstsq(Z, res, rcond=None)[0]
    pipe = Pipeline([("scale", StandardScaler()), ("enet", ElasticNetCV(l1_ratio=list(ratios), alphas=n_alphas,
                                                                       cv=folds, **TIGHT))])
    pipe.fit(res[:, 1:], res[:, 0])
    beta = pipe[-1].coef_ / pipe[0].scale_
    gamma = np.linalg.lstsq(Z, y - full[:, pen] @ beta, rcond=None)[0]
    coef = np.zeros(full.shape[1])
    coef[pen] = beta
    coef[covariates] = gamma[1:]
    return coef, gamma[0], pipe[-1], full


@pytest.mark.parametrize("variant", ["plain", "covariate", "interaction", "both"])
@pytest.mark.parametrize("inner", [None, 4])
def test_fit_model_equals_the_sklearn_pipeline(variant, inner):
    table = _table()
    kw = {}
    if variant in ("covariate", "both"):
        kw["covariates"] = ("age",)
    if variant in ("interaction", "both"):
        kw.update(arm="arm", arm_levels=ARMS, arm_interactions=True)
    spec = ModelSpec(OUTCOME, tuple(c for c in table if c.startswith("f")), l1_ratios=(0.5, 0.9, 1.0),
                     n_alphas=25, inner_folds=inner, **kw)
    fit = fit_model(table, spec, seed=2)
    design = design_matrix(table, spec)
    n = len(table)
    folds = list((LeaveOneOut() if inner is None else KFold(inner, shuffle=True, random_state=2)).split(np.zeros(n)))
    coef, intercept, enet, full = _direct_fit(design.X, design.y, design.arm_index, list(design.interaction_indices),
                                        list(design.unpenalised_indices), folds, spec.l1_ratios, spec.n_alphas)
    assert fit.alpha == pytest.approx(enet.alpha_, rel=1e-10) and fit.l1_ratio == enet.l1_ratio_
    scale = np.abs(coef).max()
    np.testing.assert_allclose(fit.coefficients["coef"], coef, atol=1e-6 * scale)
    assert fit.intercept == pytest.approx(intercept, abs=1e-6 * scale)
    assert fit.cv_mse == pytest.approx(enet.mse_path_.mean(axis=-1).min(), rel=1e-6)
    np.testing.assert_allclose(fit.predict(design.X), full @ coef + intercept, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("outer", [None, 4])
def test_nested_cv_predictions_equal_a_sklearn_loop(outer):
    table = _table(n=24, p=4, seed=6)
    spec = ModelSpec(OUTCOME, tuple(c for c in table if c.startswith("f")), covariates=("age",), arm="arm",
                     arm_levels=ARMS, arm_interactions=True, l1_ratios=(0.5, 1.0), n_alphas=15, inner_folds=3)
    design = design_matrix(table, spec)
    preds = nested_cv_predictions(design, spec, outer_folds=outer, seed=5)
    n = len(design.y)
    outer_cv = LeaveOneOut() if outer is None else KFold(outer, shuffle=True, random_state=5)
    expected = np.zeros(n)
    for train, test in outer_cv.split(np.zeros(n)):
        folds = list(KFold(3, shuffle=True, random_state=5).split(np.zeros(len(train))))
        X = design.X[train]
        feats = list(design.interaction_indices)
        coef, intercept, _, _ = _direct_fit(X, design.y[train], design.arm_index, feats,
                                         list(design.unpenalised_indices), folds, spec.l1_ratios, spec.n_alphas)
        Xt = design.X[test]
        full = np.hstack([Xt, Xt[:, [design.arm_index]] * (Xt[:, feats] - X[:, feats].mean(axis=0))])
        expected[test] = full @ coef + intercept
    np.testing.assert_allclose(preds[0], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_bootstrap_refit_with_grouped_folds_equals_sklearn():
    """One selection bootstrap: copies of a subject stay in one inner fold (leave-one-group-out / GroupKFold)."""
    from ketflow.group.predict import _fit, _inner_folds

    table = _table(n=20, p=4, seed=9)
    spec = ModelSpec(OUTCOME, tuple(c for c in table if c.startswith("f")), l1_ratios=(0.5, 1.0), n_alphas=15)
    design = design_matrix(table, spec)
    idx = np.sort(np.random.default_rng(0).integers(0, 20, 20))
    for inner, splitter in ((None, LeaveOneGroupOut()), (3, GroupKFold(3, shuffle=True, random_state=7))):
        folds = _inner_folds(ModelSpec(OUTCOME, spec.features, inner_folds=inner), 20, 7, groups=idx)
        reference = list(splitter.split(np.zeros(20), groups=idx))
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, reference))
        got = _fit(design, spec, idx, design.y[idx][:, None], folds)
        coef, _, _, _ = _direct_fit(design.X[idx], design.y[idx], None, [], [], reference, spec.l1_ratios, 15)
        np.testing.assert_allclose(got.coef[0], coef, atol=1e-6 * np.abs(coef).max())


def test_single_penalty_equals_elasticnet():
    """fit_at at a forced penalty equals ElasticNet at that alpha and l1_ratio."""
    X, y = _standardised(18, 30, seed=11)
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    search = penalty_search(X, y[:, None], folds, (0.3,), 20)
    for index in (0, 7, 19):
        forced = type(search)(**{**search.__dict__, "alpha_index": np.array([index]), "l1_index": np.array([0])})
        W, b0, _ = fit_at(X, y[:, None], forced, (0.3,))
        ref = ElasticNet(alpha=search.alphas[0, 0, index], l1_ratio=0.3, **TIGHT).fit(X, y)
        np.testing.assert_allclose(W[0], ref.coef_, atol=1e-7)
        assert b0[0] == pytest.approx(ref.intercept_, abs=1e-7)


def _kkt_violation(G, c, w, lam1, lam2):
    """Largest violation of the elastic net's optimality conditions at w (Gram form)."""
    g = c - G @ w - lam2 * w
    on = w != 0
    return max(np.max(np.abs(g[on] - lam1 * np.sign(w[on])), initial=0.0),
               np.max(np.abs(g[~on]) - lam1, initial=0.0))


@pytest.mark.parametrize("n, p, duplicated", [(25, 8, False), (16, 40, False), (16, 12, True)])
def test_every_penalty_is_exact_with_factors_kept_between_solves(n, p, duplicated):
    """The kernel keeps Cholesky factors (and F_A F_Aᵀ) from solve to solve, across penalties and
    outcomes: every solution along the paths of several outcomes, solved in turn with the same
    scratch state as the kernel does, must satisfy the optimality conditions, and be bit for bit
    the solution found when nothing is kept (p > n: the Woodbury form; duplicated rows, as in
    bootstrap resamples: singular supports and the coordinate-descent fallback)."""
    from ketflow.group import elasticnet as engine

    rng = np.random.default_rng(p)
    X, y = _standardised(n, p, seed=n + p)
    if duplicated:
        rows = np.sort(rng.integers(0, n, n))
        X, y = X[rows], y[rows]
    Y = np.column_stack([y] + [y[rng.permutation(n)] for _ in range(3)])
    ratios = np.array(RATIOS)
    alphas = engine.alpha_grid(X, Y, ratios, 30)
    tol2, yy = engine._outcome_scale(Y, engine.DEFAULT_TOL)
    kept, fresh = engine._work(p), engine._work(p)
    fallbacks = 0
    for prob, b in itertools.product(engine.fold_problems(X, Y, list(LeaveOneOut().split(X))), range(Y.shape[1])):
        c = np.ascontiguousarray(prob.C[:, b])
        for li, l1 in enumerate(ratios):
            w, w_fresh, grad, grad_fresh = np.zeros(p), np.zeros(p), c.copy(), c.copy()
            engine._restart_path(kept[3])
            engine._restart_path(fresh[3])
            n_kept = n_fresh = 0
            for alpha in alphas[b, li]:
                lam1, lam2 = alpha * l1, alpha * (1 - l1)
                exact = engine._feature_sign(prob.G, prob.F, c, w.copy(), grad.copy(), lam1, lam2,
                                             *engine._work(p), 4 * p + 10)
                fallbacks += not exact
                n_kept, ok = engine._solve(prob.G, prob.F, c, w, grad, n_kept, lam1, lam2, tol2[b], yy[b],
                                           engine.DEFAULT_MAX_SWEEPS, *kept)
                fresh[3][engine._INT_STATE, engine._FACTOR_M] = -1  # nothing kept
                fresh[3][engine._INT_STATE, engine._S_M] = -1
                n_fresh, _ = engine._solve(prob.G, prob.F, c, w_fresh, grad_fresh, n_fresh, lam1, lam2, tol2[b],
                                           yy[b], engine.DEFAULT_MAX_SWEEPS, *fresh)
                assert ok and np.array_equal(w, w_fresh)
                # exact to rounding, or as converged as the coordinate-descent fallback stops
                assert _kkt_violation(prob.G, c, w, lam1, lam2) <= (1e-9 if exact else 1e-4) * np.sqrt(yy[b])
    assert fallbacks > 0 or not duplicated  # the fallback was exercised


def test_cholesky_extension_equals_factorising_from_scratch():
    """Factorising only the rows appended to a factorised leading block gives the very same factor."""
    from ketflow.group.elasticnet import _cholesky_extend

    A = np.random.default_rng(0).normal(size=(9, 12))
    A = A @ A.T + 0.1 * np.eye(9)
    scratch = np.tril(A).copy()
    assert _cholesky_extend(scratch, 0, 9)
    for start in (1, 4, 8):
        part = np.tril(A).copy()
        assert _cholesky_extend(part, 0, start)
        assert _cholesky_extend(part, start, 9)
        assert np.array_equal(np.tril(part), np.tril(scratch))
    np.testing.assert_allclose(np.tril(scratch) @ np.tril(scratch).T, A, rtol=1e-12)
    singular = np.zeros((3, 3))
    assert not _cholesky_extend(singular, 0, 3)
