"""Probe engine: exact LOO ridge, grouped folds, probe scores and aspect choice on planted structure."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV

from mess.probing.controls import shuffled_rows
from mess.probing.probes import ALPHAS, ProbeError, fold_scores, make_folds, probe_layers
from mess.probing.report import aspect_matrix, choose_layers
from mess.probing.ridge import fit_ridge_loo
from mess.probing.targets import ASPECTS, TARGET_NAMES, TARGETS, aspect_targets


@pytest.mark.parametrize("n,p", [(90, 30), (45, 120)], ids=["primal", "dual"])
def test_leave_one_group_out_penalty_matches_refitting_without_each_group(n: int, p: int) -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, n // 4, size=n)  # albums of uneven size, some of one track
    album = rng.standard_normal((n // 4, p))[groups]  # album-mates share a sound ...
    x = album + 0.3 * rng.standard_normal((n, p))
    y = album[:, :4] @ rng.standard_normal((4, 3)) + rng.standard_normal((n, 3))  # ... and part of their targets
    ours = fit_ridge_loo(x, y, ALPHAS, groups)
    held_out = np.zeros((len(ALPHAS), y.shape[1]))
    for a, alpha in enumerate(ALPHAS):
        for g in np.unique(groups):
            out = groups == g
            fit = Ridge(alpha=alpha, solver="svd").fit(x[~out], y[~out])
            held_out[a] += ((fit.predict(x[out]) - y[out]) ** 2).sum(axis=0)
    np.testing.assert_array_equal(ours.alphas, ALPHAS[held_out.argmin(axis=0)])
    ref = Ridge(alpha=ours.alphas, solver="svd").fit(x, y)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), rtol=1e-7, atol=1e-7)
    # album-mates vouch for each other under plain LOO, which therefore picks weaker penalties
    loo = fit_ridge_loo(x, y, ALPHAS).alphas
    assert (loo <= ours.alphas).all() and (loo < ours.alphas).any()


@pytest.mark.parametrize("n,p", [(120, 40), (40, 150)], ids=["primal", "dual"])
def test_ridge_loo_matches_sklearn_ridgecv_per_target(n: int, p: int) -> None:
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((n, 5))
    x = latent @ rng.standard_normal((5, p)) + 0.5 * rng.standard_normal((n, p))
    # targets from strongly to barely predictable, so different penalties win
    y = latent @ rng.standard_normal((5, 6)) * np.array([3, 2, 1, 0.5, 0.2, 0.05]) + rng.standard_normal((n, 6)) + 4
    ours = fit_ridge_loo(x, y, ALPHAS)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, y)
    np.testing.assert_array_equal(ours.alphas, ref.alpha_)
    assert len(set(ours.alphas.tolist())) > 1
    x_new = rng.standard_normal((7, p))
    np.testing.assert_allclose(ours.predict(x_new), ref.predict(x_new), rtol=1e-8, atol=1e-8)


def test_ridge_fits_float32_layers_in_double_precision_and_takes_plain_lists() -> None:
    """Layers come from the store as float32 (and StandardScaler keeps their dtype): the fit is scikit-learn's
    RidgeCV on the same numbers in float64, targets and penalties given as plain lists included."""
    rng = np.random.default_rng(2)
    n, p = 60, 20
    x = rng.standard_normal((n, p)).astype(np.float32)
    y = x[:, :3].astype(np.float64) @ rng.standard_normal((3, 2)) + rng.standard_normal((n, 2)) + 100.0
    ours = fit_ridge_loo(x, y.tolist(), ALPHAS.tolist())
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x.astype(np.float64), y)
    np.testing.assert_array_equal(ours.alphas, ref.alpha_)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x.astype(np.float64)), rtol=1e-9, atol=1e-9)
    with pytest.raises(dataclasses.FrozenInstanceError):  # a fit handed around cannot be changed behind its users
        ours.alphas = ALPHAS[:2]  # type: ignore[misc]

def test_penalties_of_two_albums_leave_each_out_in_turn_and_of_one_album_are_plain_leave_one_out() -> None:
    """Two albums (a small fold's training rows): each target's penalty is the one whose ridge, refitted without
    each album in turn (scikit-learn), predicts it best. One album: nothing can be left out, so RidgeCV's LOO."""
    rng = np.random.default_rng(0)
    n, p = 40, 10
    album = np.repeat([0, 1], n // 2)
    x = rng.standard_normal((n, p)) + 1.5 * rng.standard_normal((2, p))[album]
    y = x[:, :2] @ rng.standard_normal((2, 3)) + 2.0 * rng.standard_normal((2, 3))[album] + rng.standard_normal((n, 3))
    held = np.zeros((len(ALPHAS), 3))
    for a, alpha in enumerate(ALPHAS):
        for g in (0, 1):
            out = album == g
            held[a] += ((Ridge(alpha=alpha).fit(x[~out], y[~out]).predict(x[out]) - y[out]) ** 2).sum(axis=0)
    loo = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, y).alpha_
    assert not np.array_equal(ALPHAS[held.argmin(axis=0)], loo)  # the two choices differ here
    np.testing.assert_array_equal(fit_ridge_loo(x, y, ALPHAS, album).alphas, ALPHAS[held.argmin(axis=0)])
    np.testing.assert_array_equal(fit_ridge_loo(x, y, ALPHAS, np.full(n, "one")).alphas, loo)

@pytest.mark.parametrize("n", [60, 12], ids=["primal", "dual"])
def test_ridge_of_a_layer_with_dead_and_duplicated_units_is_scikit_learns(n: int) -> None:
    """A unit that never fires (a constant column: 0 once standardised) and units that copy others leave null
    directions in the features: they must be dropped, not divided by, and the fit is RidgeCV's."""
    rng = np.random.default_rng(6)
    live = rng.standard_normal((n, 8))
    x = np.column_stack([live, np.zeros(n), live[:, :3], 2.0 * live[:, 3]])
    y = live[:, :2] @ rng.standard_normal((2, 3)) + 0.5 * rng.standard_normal((n, 3))
    ours = fit_ridge_loo(x, y, ALPHAS)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, y)
    np.testing.assert_array_equal(ours.alphas, ref.alpha_)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), rtol=1e-7, atol=1e-7)

def test_folds_group_by_album_then_artist_then_plain_kfold() -> None:
    n = 40
    albums = [f"album{i // 4}" if i % 10 else None for i in range(n)]  # 10 albums, some tracks untagged
    folds = make_folds(n, [("album", albums), ("artist", ["a"] * n)], n_folds=5)
    assert folds.group_field == "album" and "GroupKFold(5)" in folds.scheme
    for train, test in folds.splits:
        shared = {albums[i] for i in train} & {albums[i] for i in test}
        assert shared <= {None}, f"album on both sides: {shared}"
        assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([t for _, t in folds.splits]).tolist()) == list(range(n))

    artists = [f"artist{i % 6}" for i in range(n)]
    by_artist = make_folds(n, [("album", ["one"] * n), ("artist", artists)], n_folds=5)
    assert by_artist.group_field == "artist"

    plain = make_folds(n, [("album", ["one"] * n), ("artist", ["x", "y"] * (n // 2))], n_folds=5)
    assert plain.group_field is None and plain.scheme.startswith("KFold(5)")
    with pytest.raises(ProbeError):
        make_folds(3, [], n_folds=5)


def test_folds_are_clamped_to_the_tracks_and_an_album_that_exactly_fills_a_fold_is_grouped_by() -> None:
    """`--folds 1` gives 2 folds and more folds than tracks one track per fold; an album of exactly n / k tracks fits
    a fold, so its field is used; plain folds say why they are not grouped, and are shuffled by the seed."""
    two = make_folds(6, [], n_folds=1)
    assert len(two.splits) == 2 and two.scheme.startswith("KFold(2)") and "no artist/album tags" in two.scheme
    assert two.groups is None and two.n == 6
    assert sorted(len(test) for _, test in make_folds(5, [], n_folds=10).splits) == [1] * 5
    albums = ["big"] * 8 + [f"a{i // 4}" for i in range(32)]  # 40 tracks in 5 folds of 8: 'big' fills one exactly
    folds = make_folds(40, [("album", albums), ("artist", [f"r{i % 10}" for i in range(40)])], n_folds=5)
    assert folds.group_field == "album" and "(9 groups)" in folds.scheme
    assert folds.groups is not None and folds.groups.tolist() == albums  # the inner penalty choice leaves albums out
    untagged = make_folds(8, [("album", ["x", None] * 4)], n_folds=4)  # 5 groups: 'x' and four of one track
    assert untagged.group_field == "album" and len(set(untagged.groups.tolist())) == 5
    few = make_folds(8, [("album", ["x", "y"] * 4)], n_folds=4)
    assert few.group_field is None and "too few distinct artists/albums" in few.scheme
    seeded = [make_folds(20, [], n_folds=4, seed=s) for s in (0, 0, 1)]
    tests = [[t.tolist() for _, t in f.splits] for f in seeded]
    assert tests[0] == tests[1] != tests[2] and "seed 1" in seeded[2].scheme
    assert all(t != list(range(5 * k, 5 * k + 5)) for k, t in enumerate(tests[0]))  # shuffled, not in order

def _planted(n: int, seed: int = 0) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, list[str]]:
    """Six layers, layer k carrying aspect k's latent factor; targets read the factors of their aspect."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, len(ASPECTS)))
    y = np.empty((n, len(TARGETS)))
    for a, aspect in enumerate(ASPECTS):
        for i in aspect_targets(aspect):
            y[:, i] = factors[:, a] * rng.uniform(0.5, 2.0) + 0.3 * rng.standard_normal(n) + rng.normal(0, 5)
    layers = []
    for a in range(len(ASPECTS)):
        mix = rng.standard_normal((1, 64))
        layers.append((f"layer{a}", (factors[:, [a]] @ mix + rng.standard_normal((n, 64))).astype(np.float32)))
    artists = [f"artist{i % 12}" for i in range(n)]
    return layers, y, artists


def test_probe_recovers_planted_aspect_layers_and_shuffled_control_scores_nothing() -> None:
    layers, y, artists = _planted(240)
    folds = make_folds(len(y), [("artist", artists)], n_folds=5)
    scores = probe_layers([(name, lambda m=m: m) for name, m in layers], y, TARGET_NAMES, folds)
    assert scores.r2.shape == scores.r2_std.shape == (len(ASPECTS), len(TARGETS))
    choices = {c.aspect: c for c in choose_layers(scores)}
    for a, aspect in enumerate(ASPECTS):
        assert choices[aspect].layer == f"layer{a}"
        assert choices[aspect].score > 0.5 and choices[aspect].margin > 0.4
    matrix = aspect_matrix(scores)
    off_diagonal = matrix[~np.eye(len(ASPECTS), dtype=bool)]
    assert off_diagonal.max() < 0.1, "a layer predicts an aspect it does not carry"

    null = probe_layers([(name, lambda m=m: m) for name, m in layers], shuffled_rows(y, 0), TARGET_NAMES, folds)
    assert np.nanmax(aspect_matrix(null)) < 0.05
    assert np.nanmean(null.r2) < 0.0


def test_fold_scores_are_pooled_r2_and_constant_targets_are_nan() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 8))
    y = np.column_stack([x @ rng.standard_normal(8) + 0.1 * rng.standard_normal(100), np.full(100, 2.0)])
    folds = make_folds(100, [], n_folds=4)
    scores = fold_scores(x, y, folds)
    assert scores.shape == (4, 2)
    assert np.isnan(scores[:, 1]).all()
    assert scores[:, 0].min() > 0.95
    rounding = 1e6 * (1 + 1e-8 * rng.standard_normal(100))  # the same to 8 digits: rounding, not a target
    assert np.isnan(fold_scores(x, rounding[:, None], folds)).all()
    flat = fold_scores(x, np.full((100, 3), -7.5), folds)  # nothing to predict: every score undefined
    assert flat.shape == (4, 3) and np.isnan(flat).all()
    with pytest.raises(ProbeError, match="unknown probe 'svm'; use one of ridge, mlp"):
        fold_scores(x, y, folds, "svm")


def test_mlp_probe_learns_a_nonlinear_target_the_linear_probe_cannot() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(400, 4))
    y = (x[:, :1] ** 2 + 0.05 * rng.standard_normal((400, 1)))  # symmetric: no linear signal
    folds = make_folds(400, [], n_folds=4)
    linear = fold_scores(x, y, folds, "ridge").mean()
    mlp = fold_scores(x, y, folds, "mlp").mean()
    assert linear < 0.05
    assert mlp > 0.6



def test_folds_pass_over_a_field_with_an_oversized_group_and_untagged_tracks_are_groups_of_their_own() -> None:
    n = 40
    albums = ["compilation"] * 20 + [f"album{i // 4}" for i in range(20)]  # one album fills half the collection
    artists = [f"artist{i % 8}" for i in range(n)]
    folds = make_folds(n, [("album", albums), ("artist", artists)], n_folds=5)
    assert folds.group_field == "artist" and "(8 groups)" in folds.scheme
    only_albums = make_folds(n, [("album", albums)], n_folds=5)  # no better field: grouped beats leaky
    assert only_albums.group_field == "album"

    tagged = [f"album{i // 3}" if i < 30 else None for i in range(n)]  # 10 albums of 3, 10 untagged tracks
    folds = make_folds(n, [("album", tagged)], n_folds=5)
    assert "(20 groups)" in folds.scheme
    untagged_folds = {f for f, (_, test) in enumerate(folds.splits) for i in test if tagged[i] is None}
    assert len(untagged_folds) > 1, "the untagged tracks were held out together, as if one album"


def test_fold_scores_are_ridge_with_leave_one_group_out_penalties_fitted_here() -> None:
    """Out-of-fold R^2 (over the variance of all tracks) of a ridge fitted per fold as written out here with
    scikit-learn: features standardised on the training rows, each target's penalty picked by refitting without
    each training album in turn."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(11)
    n, p = 48, 12
    album = np.repeat(np.arange(12), 4)
    x = rng.standard_normal((n, p)) + 2.0 * rng.standard_normal((12, p))[album]  # album-mates look alike
    y = np.column_stack([x[:, :3].sum(axis=1) + rng.standard_normal(n),
                         3.0 * rng.standard_normal(12)[album] + 0.5 * rng.standard_normal(n) + 10])
    folds = make_folds(n, [("album", [f"a{g}" for g in album])], n_folds=4)
    assert folds.group_field == "album"
    got = fold_scores(x, y, folds)
    for f, (train, test) in enumerate(folds.splits):
        scaler = StandardScaler().fit(x[train])
        xt, xs, yt, groups = scaler.transform(x[train]), scaler.transform(x[test]), y[train], album[train]
        mse = np.zeros((len(ALPHAS), y.shape[1]))
        for a, alpha in enumerate(ALPHAS):
            held = np.empty_like(yt)
            for g in np.unique(groups):
                out = groups == g
                held[out] = Ridge(alpha=alpha).fit(xt[~out], yt[~out]).predict(xt[out])
            mse[a] = ((held - yt) ** 2).mean(axis=0)
        for t in range(y.shape[1]):
            pred = Ridge(alpha=ALPHAS[np.argmin(mse[:, t])]).fit(xt, yt[:, t]).predict(xs)
            want = 1.0 - ((pred - y[test, t]) ** 2).mean() / y[:, t].var()
            assert got[f, t] == pytest.approx(want, abs=1e-7), (f, t)
    np.testing.assert_array_equal(fold_scores(x, y.tolist(), folds), got)  # targets given as plain lists


def test_aspect_scores_floor_each_target_at_zero_skip_constant_targets_and_margins_are_differences() -> None:
    """Written out here for a score table with negative R^2 and a constant (NaN) target: an aspect's score per layer
    is the mean over its non-constant targets of max(R^2, 0); the chosen layer has the highest, and its margin is
    its score less the runner-up's."""
    from mess.probing.probes import ProbeScores

    rng = np.random.default_rng(12)
    r2 = rng.uniform(-1.5, 0.9, size=(4, len(TARGETS)))
    first = list(aspect_targets(ASPECTS[0]))
    r2[:, first[0]] = np.nan  # a target constant over the collection
    scores = ProbeScores(tuple(f"l{i}" for i in range(4)), tuple(TARGET_NAMES), r2, np.zeros_like(r2))
    want = np.column_stack([np.maximum(r2[:, [i for i in aspect_targets(a) if not np.isnan(r2[0, i])]], 0).mean(axis=1)
                            for a in ASPECTS])
    np.testing.assert_allclose(aspect_matrix(scores), want)
    choices = choose_layers(scores)
    assert [c.aspect for c in choices] == list(ASPECTS)
    for a, c in enumerate(choices):
        best, second = np.argsort(-want[:, a])[:2]
        assert (c.layer, c.runner_up) == (f"l{best}", f"l{second}")
        assert c.score == pytest.approx(want[best, a]) and c.margin == pytest.approx(want[best, a] - want[second, a])


@pytest.mark.parametrize("tagged", [False, True])
def test_copies_of_one_file_share_a_fold_so_a_copy_never_predicts_its_twin(tagged: bool) -> None:
    """Copies of a file (one content hash, in two folders or albums) have equal vectors and targets; folds split
    them, and the test copy was predicted from its training twin: on a layer that carries nothing of the target
    the probe scored R^2 near 1. Copies now share a fold (and a group for the inner penalty choice)."""
    rng = np.random.default_rng(0)
    n = 20
    x_files, y_files = rng.standard_normal((n, 30)), rng.standard_normal((n, 1))  # vectors say nothing of y
    x, y = np.vstack([x_files, x_files]), np.vstack([y_files, y_files])
    same = [f"hash{i}" for i in range(n)] * 2
    albums = [f"album{i % 10}" for i in range(n)] + [f"best-of{i % 7}" for i in range(n)]  # a copy elsewhere
    meta = [("album", albums)] if tagged else []
    folds = make_folds(2 * n, meta, n_folds=5, seed=0, same=same)
    for train, test in folds.splits:
        assert not {same[i] for i in train} & {same[i] for i in test}
    assert "copies of one file kept in one fold" in folds.scheme
    if tagged:  # grouped by album still: an album and every album holding a copy of one of its files are one group
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        albums2 = [f"album{i // 2}" for i in range(n)] + [f"best-of{i // 4}" for i in range(n)]
        rows = np.arange(2 * n)
        node = {v: 2 * n + i for i, v in enumerate(dict.fromkeys(albums2 + same))}  # albums and hashes as nodes
        a = np.concatenate([[node[albums2[r]] for r in rows], [node[same[r]] for r in rows]])
        graph = coo_matrix((np.ones(4 * n), (a, np.concatenate([rows, rows]))), shape=(len(node) + 2 * n,) * 2)
        component = connected_components(graph, directed=False)[1][:2 * n]
        grouped = make_folds(2 * n, [("album", albums2)], n_folds=5, seed=0, same=same)
        assert grouped.group_field == "album" and f"({len(set(component))} groups)" in grouped.scheme
        for train, test in grouped.splits:
            assert not set(component[train]) & set(component[test])
    assert fold_scores(x, y, folds).mean() < 0.1
    leaky = make_folds(2 * n, meta, n_folds=5, seed=0)  # what folds without the content hashes do: most pairs split
    assert sum(len({same[i] for i in train} & {same[i] for i in test}) for train, test in leaky.splits) > n / 2
    with pytest.raises(ProbeError, match=r"at least 4 different files, got 3 \(the 9 tracks are copies of them\)"):
        make_folds(9, meta[:0], n_folds=5, same=["a", "b", "c"] * 3)


@pytest.mark.parametrize("n", [4, 6, 13])
def test_mlp_probe_runs_on_a_small_collection(n: int) -> None:
    """`mess probe --probe mlp` on fewer than ~14 tracks ended in a traceback: early stopping held out 10% of a
    fold's training rows, under the 2 scikit-learn needs ('The validation set is too small')."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8))
    y = np.column_stack([x[:, 0], x[:, 1] ** 2])
    folds = make_folds(n, [], n_folds=5)
    scores = fold_scores(x, y, folds, kind="mlp")
    assert scores.shape == (len(folds.splits), 2) and np.isfinite(scores).all()


def test_mlp_probe_fits_each_target_of_a_layer() -> None:
    """The MLP is fitted to every target of a layer at once: each is predicted, not only the first."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, size=(300, 4))
    y = np.column_stack([x[:, 0] ** 2, -3.0 * x[:, 1]]) + 0.05 * rng.standard_normal((300, 2))  # unrelated targets
    folds = make_folds(300, [], n_folds=3)
    both = fold_scores(x, y, folds, "mlp").mean(axis=0)
    assert both.min() > 0.8, both


@pytest.mark.parametrize("jobs", [0, 1, 2, 8])
def test_probe_layers_runs_jobs_layers_at_a_time_reports_each_once_and_scores_each_as_alone(jobs: int) -> None:
    """Every layer is loaded once, at most ``jobs`` (at least one) are in flight when the next is loaded, each is
    reported once, and its scores are the mean and standard deviation over folds of that layer probed alone."""
    rng = np.random.default_rng(5)
    n = 40
    y = rng.standard_normal((n, 3))
    mats = {f"l{i}": (y @ rng.standard_normal((3, 6)) * (i / 4) + rng.standard_normal((n, 6))) for i in range(5)}
    folds = make_folds(n, [], n_folds=4)
    loaded: list[str] = []
    reported: list[str] = []

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            assert len(loaded) - len(reported) <= max(1, jobs) - 1, "more layers in flight than jobs"
            loaded.append(name)
            return mats[name]
        return load

    scores = probe_layers([(name, loader(name)) for name in mats], y, ["t0", "t1", "t2"], folds, jobs=jobs,
                          on_layer=reported.append)
    assert loaded == list(mats) and sorted(reported) == list(mats) and scores.layers == tuple(mats)
    assert scores.targets == ("t0", "t1", "t2")
    for i, name in enumerate(mats):
        alone = fold_scores(mats[name], y, folds)
        np.testing.assert_allclose(scores.r2[i], alone.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(scores.r2_std[i], alone.std(axis=0), rtol=0, atol=1e-12)
    assert scores.r2[4].mean() > scores.r2[1].mean() > scores.r2[0].mean()  # the planted signal, growing
