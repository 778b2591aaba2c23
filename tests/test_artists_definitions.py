"""Artist functions checked against their definitions, written out here independently of the code under test."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from mess.artists.credits import collaboration_similarity, split_credit, track_credits
from mess.artists.discrimination import (
    LayerReport,
    PairStats,
    Separation,
    layer_report,
    most_discriminative,
    pair_stats,
    rank_layers,
    separation,
)
from mess.artists.hybrid import (
    HybridFit,
    blend,
    collab_similarity,
    components,
    fit_hybrid,
    genre_similarity,
    learn_weights,
    load_weights,
    parse_weights,
    rescale,
    save_weights,
)
from mess.artists.profiles import ArtistError, Space, artist_of, build_artists, in_space
from mess.artists.reference import Coverage, load_reference, match_reference, parse_reference, read_json
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_matrix, similarity_row
from mess.artists.validate import evaluate, random_baseline
from mess.audio.names import name_key
from mess.store import Track


def make_track(tid: int, artist: str | None, *, album: str | None = None, composer: str | None = None,
               genre: str | None = None, title: str | None = None) -> Track:
    return Track(id=tid, path=f"/music/{tid}.flac", content_hash=f"h{tid}", duration=10.0, artist=artist,
                 album=album, title=title or f"song {tid}", genre=genre, composer=composer)


# ---- credits ----------------------------------------------------------------------------------
def test_a_guest_of_words_that_name_no_one_is_no_artist_unless_it_is_known() -> None:
    assert track_credits("A", "Song (with Orchestra)") == ["A"]
    assert track_credits("A", "Song (feat. Full Choir & B)") == ["A", "B"]
    assert track_credits("A", "Song (with the London Symphony Orchestra)") == ["A", "the London Symphony Orchestra"]
    assert split_credit("A feat. Strings") == ["A"] and split_credit("A feat. Strings, C") == ["A", "C"]
    assert split_credit("Orchestra") == ["Orchestra"]  # a main artist is never dropped
    assert split_credit("Orchestra; Choir") == ["Orchestra", "Choir"]  # nor each value of a multi-valued tag
    band = {name_key("The Band")}
    assert split_credit("A feat. The Band") == ["A"] and split_credit("A feat. The Band", band) == ["A", "The Band"]
    assert track_credits("A", "Song (with The Band)", band) == ["A", "The Band"]
    assert track_credits(None, "Song (with B)") == ["B"] and track_credits("A", None) == ["A"]
    # a known name of symbols only ('+/-') is known without the bracket the guest credit closed with
    assert split_credit("A (with +/-)", {name_key("+/-")}) == ["A", "+/-"]


def test_every_value_of_a_credit_is_split_and_spellings_of_one_artist_are_one() -> None:
    assert split_credit("A; B feat. C") == ["A", "B", "C"]
    assert split_credit("A & B; b ft. C + D") == ["A", "B", "C", "D"]
    assert track_credits("A feat. B", "Song [ft. b & C]") == ["A", "B", "C"]


def test_collaboration_similarity_is_the_cosine_of_co_credit_counts_plus_identity() -> None:
    """Built by hand: each track adds 1 between every two names it credits (a pair twice adds 2); a name that is no
    artist (a guest) is a node too; rows are the artists', columns every node's."""
    artists = ["A", "B", "C", "D", "E"]
    credits = [["A", "B"], ["a", "B"], ["B", "Guest"], ["C", "Guest", "D"], ["E"]]
    nodes = ["a", "b", "c", "d", "e", "guest"]
    adj = np.eye(len(nodes))
    for names in credits:
        ids = [nodes.index(n.casefold()) for n in names]
        for i in ids:
            for j in ids:
                adj[i, j] += i != j
    rows = adj[: len(artists)]
    expected = rows @ rows.T / np.outer(np.linalg.norm(rows, axis=1), np.linalg.norm(rows, axis=1))
    np.testing.assert_allclose(collaboration_similarity(artists, credits), expected, atol=1e-6)


# ---- similarity -------------------------------------------------------------------------------
def test_an_unknown_method_or_an_artist_without_vectors_is_refused() -> None:
    artists = build_artists([make_track(1, "A"), make_track(2, "B"), make_track(3, "C")])
    rows = np.eye(3, dtype=np.float32)
    vectors = artist_vectors(artists, Space("toy", np.arange(1, 4), rows))
    for bad in (lambda: similarity_matrix(vectors, "median"), lambda: similarity_row(vectors, 0, "median")):
        with pytest.raises(ArtistError, match="unknown method 'median'; choose mean or chamfer"):
            bad()
    with pytest.raises(ArtistError, match="artist 'C' has no vectors in toy"):
        artist_vectors(artists, Space("toy", np.arange(1, 3), rows[:2]))


def test_artist_vectors_are_centred_unless_asked_not_to() -> None:
    """Centring by default: the mean of every track of the space is subtracted before the unit rows."""
    rng = np.random.default_rng(2)
    rows = (rng.normal(size=(6, 4)) + 5.0).astype(np.float32)
    artists = build_artists([make_track(i + 1, "AB"[i % 2]) for i in range(6)])
    vectors = artist_vectors(artists, Space("toy", np.arange(1, 7), rows))
    moved = rows - rows.mean(axis=0)
    order = [i for p in artists.profiles for i in np.array(p.track_ids) - 1]
    expected = moved[order] / np.linalg.norm(moved[order], axis=1, keepdims=True)
    assert vectors.centered and np.allclose(vectors.vectors, expected, atol=1e-6)
    assert list(vectors.offsets) == [0, 3]


# ---- hybrid -----------------------------------------------------------------------------------
def test_genre_similarity_is_the_jaccard_index_of_tag_sets_and_one_on_the_diagonal() -> None:
    tracks = [make_track(1, "A", genre=" Rock / Indie"), make_track(2, "A", genre="pop|rock "),
              make_track(3, "B", genre="ROCK, jazz"), make_track(4, "C"), make_track(5, "D"), make_track(6, None)]
    artists = build_artists(tracks)
    tags = {"A": {"rock", "indie", "pop"}, "B": {"rock", "jazz", "blues"}, "C": {"pop", "indie"}, "D": set()}
    # a --tags file's values are read as file tags are: split at ; , / | and compared without case or padding
    sim = genre_similarity(artists, extra_tags={"b": ["Blues"], "C": [" Pop ", "indie; POP"]})
    for x, y in itertools.product("ABCD", repeat=2):
        union = tags[x] | tags[y]
        expected = 1.0 if x == y else len(tags[x] & tags[y]) / len(union) if union else 0.0
        assert sim[artists.index(x), artists.index(y)] == pytest.approx(expected), (x, y)


def test_collaborations_of_a_composer_credited_collection_are_read_from_the_composer_tag() -> None:
    tracks = [make_track(1, None, composer="Clara; Dora"), make_track(2, None, composer="Clara"),
              make_track(3, "Erin", composer="Clara & Fay"), make_track(4, None, composer="Fay"),
              make_track(5, "Various Artists", composer="Fay feat. Erin"), make_track(6, None, composer="Dora")]
    artists = build_artists(tracks)
    clara, dora, erin, fay = (artists.index(n) for n in ("Clara", "Dora", "Erin", "Fay"))
    sim = collab_similarity(artists)
    # credits: Clara-Dora (composers, no artist tag), Fay-Erin (a placeholder artist tag: the composer's credit)
    expected = collaboration_similarity(artists.names, [["Clara", "Dora"], ["Fay", "Erin"]])
    np.testing.assert_allclose(sim, expected)
    assert sim[clara, dora] == pytest.approx(1.0) and sim[erin, fay] == pytest.approx(1.0) and sim[clara, fay] == 0


def test_rescale_maps_the_off_diagonal_range_onto_zero_to_one_and_keeps_one_on_the_diagonal() -> None:
    rng = np.random.default_rng(4)
    sim = rng.uniform(-0.3, 0.8, size=(5, 5))
    off = ~np.eye(5, dtype=bool)
    lo, hi = sim[off].min(), sim[off].max()
    expected = (sim - lo) / (hi - lo)
    expected[~off] = 1.0
    np.testing.assert_allclose(rescale(sim), expected, atol=1e-6)
    assert rescale(np.full((4, 4), 0.3) + np.eye(4)) is None  # equal off the diagonal, whatever the diagonal


def test_components_refuse_a_constant_audio_similarity_and_add_the_reference_lists() -> None:
    artists = build_artists([make_track(i + 1, name, genre=g) for i, (name, g) in
                             enumerate([("A", "rock"), ("B", "rock"), ("C", "jazz")])])
    with pytest.raises(ArtistError, match="audio similarity is constant across artists"):
        components(np.full((3, 3), 0.5), artists)
    pair = build_artists([make_track(1, "A"), make_track(2, "B")])
    with pytest.raises(ArtistError, match="2 artists make only one pair"):
        components(np.array([[1.0, 0.2], [0.2, 1.0]]), pair)
    audio = np.array([[1.0, 0.1, 0.5], [0.1, 1.0, 0.3], [0.5, 0.3, 1.0]])
    parts = components(audio, artists, matched={0: [2, 1]})
    assert list(parts) == ["audio", "genre", "reference"]  # no collaborations: left out
    np.testing.assert_allclose(parts["audio"], rescale(audio))
    np.testing.assert_allclose(parts["reference"], [[1, 0.5, 1], [0.5, 1, 0], [1, 0, 1]])  # 0 lists 2, 1: 1, 1/2


def test_blend_counts_a_component_without_weight_as_zero() -> None:
    a, b = np.eye(3), np.ones((3, 3))
    np.testing.assert_allclose(blend({"audio": a, "genre": b}, {"audio": 0.4}), 0.4 * a)
    np.testing.assert_allclose(blend({"audio": a, "genre": b}, {"genre": 0.5, "collab": 9.0}), 0.5 * b)


def test_weights_parse_zero_and_blank_items_and_refuse_one_named_twice() -> None:
    assert parse_weights("audio=0, genre=2,, ") == {"audio": 0.0, "genre": 1.0}
    for bad in ("audio=x,genre=1", "genre=1,audio", "audio=1,genre=1 0"):
        with pytest.raises(ArtistError, match="is not NAME=NUMBER"):
            parse_weights(bad)
    with pytest.raises(ArtistError, match="weight 'audio' given twice"):
        parse_weights("audio=1,genre=1, audio =2")
    with pytest.raises(ArtistError, match="weights must be finite, non-negative numbers with a positive sum"):
        parse_weights("audio=0,genre=0")


def test_learning_weights_of_one_component_gives_it_all_and_its_own_ndcg() -> None:
    rng = np.random.default_rng(6)
    audio = rng.random((12, 12))
    matched = {q: [int(j) for j in rng.choice([i for i in range(12) if i != q], 3, replace=False)] for q in range(12)}
    weights, ndcg = learn_weights({"audio": audio}, matched, range(0, 12, 2), k=4)
    assert weights == {"audio": 1.0}
    assert ndcg == pytest.approx(brute_force_ndcg(audio, {q: matched[q] for q in range(0, 12, 2)}, 4))
    once = (q for q in range(0, 12, 2))  # any iterable, also one read once
    same = learn_weights({"audio": audio, "genre": audio.copy()}, matched, range(12), k=4)[0]
    assert same == {"audio": 0.5, "genre": 0.5}  # no weighting ranks otherwise: the equal start stands
    two = {"audio": audio, "genre": audio.T}
    assert learn_weights(two, matched, once, k=4) == learn_weights(two, matched, list(range(0, 12, 2)), k=4)


def test_learned_weights_are_a_coordinate_optimum_on_the_grid() -> None:
    """Coordinate ascent stops when no single weight moved to a grid value (0, 0.1, ..., 1) raises the training
    nDCG; in this draw a first pass over the weights does not get there (a second one does)."""
    rng = np.random.default_rng(2)
    parts = {c: rng.random((14, 14)) for c in ("audio", "genre", "collab")}
    matched = {q: [int(j) for j in rng.choice([i for i in range(14) if i != q], 4, replace=False)] for q in range(14)}
    train = {q: matched[q] for q in range(0, 14, 2)}
    weights, ndcg = learn_weights(parts, matched, train, k=4)
    assert ndcg == pytest.approx(brute_force_ndcg(blend(parts, weights), train, 4))
    for name, value in itertools.product(parts, np.linspace(0, 1, 11)):
        trial = dict(weights, **{name: value})
        if sum(trial.values()) > 0:
            trial = {c: w / sum(trial.values()) for c, w in trial.items()}
            assert brute_force_ndcg(blend(parts, trial), train, 4) <= ndcg + 1e-9, (name, value)


def brute_force_ndcg(scores: np.ndarray, matched: dict[int, list[int]], k: int) -> float:
    """Mean nDCG@k, relevance of list position p of L = (L - p) / L."""
    out = []
    for q, relevant in matched.items():
        ranking = [j for j in np.argsort(-scores[q], kind="stable") if j != q]
        gain = {r: (len(relevant) - p) / len(relevant) for p, r in enumerate(relevant)}
        dcg = sum(gain.get(j, 0) / np.log2(p + 2) for p, j in enumerate(ranking[:k]))
        out.append(dcg / sum(gain[r] / np.log2(p + 2) for p, r in enumerate(relevant[:k])))
    return float(np.mean(out))


def test_fit_hybrid_splits_at_least_one_query_each_way_and_refuses_what_cannot_be_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    audio = rng.random((6, 6))
    matched = {0: [1, 2], 3: [4], 5: [0, 3]}
    for fraction, n_test in ((0.01, 1), (0.99, 2), (0.5, 2)):
        fit = fit_hybrid({"audio": audio}, matched, k=3, test_fraction=fraction, seed=1)
        assert (fit.train_queries, fit.test_queries) == (3 - n_test, n_test)
        assert fit.test["hybrid"].queries == n_test and set(fit.test) >= {"hybrid", "equal", "audio"}
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(ArtistError, match="test fraction must be between 0 and 1"):
            fit_hybrid({"audio": audio}, matched, test_fraction=fraction)
    with pytest.raises(ArtistError, match="at least 2 reference artists in the collection, found 1"):
        fit_hybrid({"audio": audio}, {0: [1]})
    two = fit_hybrid({"audio": audio}, {0: [1, 2], 3: [4]}, k=3)  # two are enough: one to learn, one to test
    assert (two.train_queries, two.test_queries) == (1, 1)
    path = tmp_path / "weights.json"
    save_weights(path, HybridFit({"audio": 0.3, "genre": 0.9}, 2, 1, 0.5, {}), {"model": "m"})
    assert load_weights(path) == pytest.approx({"audio": 0.25, "genre": 0.75})
    with pytest.raises(ArtistError, match="no learned weights at"):
        load_weights(tmp_path / "none.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(ArtistError, match=r"cannot read weights file .*folder\.json"):
        load_weights(tmp_path / "folder.json")


# ---- discrimination ---------------------------------------------------------------------------
def with_cosines(gram: np.ndarray) -> np.ndarray:
    """Unit rows whose pairwise cosines are ``gram`` (its Cholesky factor)."""
    return np.linalg.cholesky(gram).astype(np.float32)


def singletons(rows: np.ndarray) -> tuple:
    artists = build_artists([make_track(i + 1, f"artist {i}") for i in range(len(rows))])
    return artists, Space("toy", np.arange(1, len(rows) + 1), rows)


def test_pair_stats_are_those_of_the_upper_triangle_with_its_extreme_pairs_named() -> None:
    rng = np.random.default_rng(9)
    sim = rng.uniform(-1, 1, size=(6, 6))
    names = list("uvwxyz")
    pairs = {(names[i], names[j]): sim[i, j] for i in range(6) for j in range(i + 1, 6)}
    stats = pair_stats(sim, names)
    (hi_pair, hi), (lo_pair, lo) = max(pairs.items(), key=lambda p: p[1]), min(pairs.items(), key=lambda p: p[1])
    assert stats == PairStats(min=pytest.approx(lo), max=pytest.approx(hi), span=pytest.approx(hi - lo),
                              mean=pytest.approx(np.mean(list(pairs.values()))), highest=(*hi_pair, pytest.approx(hi)),
                              lowest=(*lo_pair, pytest.approx(lo)))


@pytest.mark.parametrize(("low", "high", "compressed"), [(0.6, 0.9, True), (0.2, 0.25, True), (0.2, 0.4, False),
                                                         (0.45, 0.56, False)])
def test_a_layer_is_compressed_when_its_pairs_span_little_or_its_least_similar_pair_is_similar(
        low: float, high: float, compressed: bool) -> None:
    """Raw pair cosines between ``low`` and ``high``: compressed when high - low < 0.1 or low > 0.5."""
    n = 5
    gram = np.full((n, n), (low + high) / 2)
    gram[0, 1] = gram[1, 0] = low
    gram[2, 3] = gram[3, 2] = high
    np.fill_diagonal(gram, 1.0)
    artists, space = singletons(with_cosines(gram))
    report = layer_report(artists, space)
    assert (report.raw.min, report.raw.max) == (pytest.approx(low, abs=1e-5), pytest.approx(high, abs=1e-5))
    assert ("compressed" in report.flags) == compressed
    # one track each: nothing to judge by, which is not evidence of no artist signal (was 'useless')
    assert "no-evidence" in report.flags and "no-artist-signal" not in report.flags and report.verdict == "unknown"
    assert report.silhouette is None and report.to_dict()["verdict"] == "unknown"


@pytest.mark.filterwarnings("error")  # said as NaN, not computed as 0 / 0 (a RuntimeWarning on the terminal)
def test_separation_without_pairs_of_one_artist_or_with_equal_between_pairs_has_no_effect_size() -> None:
    gram = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    x = np.linalg.cholesky(gram)
    alone = separation(ArtistVectors(x, np.arange(4), centered=False))
    assert np.isnan(alone.within) and np.isnan(alone.effect) and alone.between == pytest.approx(0.3)
    paired = separation(ArtistVectors(np.eye(4), np.array([0, 2]), centered=False))  # every cosine 0: std 0
    assert (paired.within, paired.between) == (0.0, 0.0) and np.isnan(paired.effect)


def test_silhouette_of_a_layer_is_sklearns_cosine_silhouette_of_its_centred_tracks() -> None:
    rng = np.random.default_rng(10)
    rows = (rng.normal(size=(12, 6)) + np.repeat(rng.normal(size=(4, 6)) * 2, 3, axis=0)).astype(np.float32)
    artists = build_artists([make_track(i + 1, f"artist {i // 3}") for i in range(12)])
    report = layer_report(artists, Space("toy", np.arange(1, 13), rows))
    labels = np.repeat(np.arange(4), 3)
    assert report.silhouette == pytest.approx(silhouette_score(rows - rows.mean(axis=0), labels, metric="cosine"),
                                              abs=1e-5)
    within = [float(np.dot(*normalize_pair(rows - rows.mean(axis=0), i, j))) for i in range(12)
              for j in range(12) if i != j and i // 3 == j // 3]
    assert report.separation.within == pytest.approx(np.mean(within), abs=1e-5)


def test_two_artists_of_two_tracks_each_have_a_silhouette() -> None:
    """sklearn's silhouette needs 2 to n - 1 labels: two artists of two tracks each are enough."""
    rows = np.array([[1, 0.1, 0], [0.9, 0.2, 0.1], [-0.1, 1, 0.2], [0.1, 0.8, -0.3]], dtype=np.float32)
    artists = build_artists([make_track(i + 1, "AB"[i // 2]) for i in range(4)])
    report = layer_report(artists, Space("toy", np.arange(1, 5), rows))
    expected = silhouette_score(rows - rows.mean(axis=0), [0, 0, 1, 1], metric="cosine")
    assert report.silhouette == pytest.approx(expected, abs=1e-5)


def normalize_pair(x: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    return x[i] / np.linalg.norm(x[i]), x[j] / np.linalg.norm(x[j])


def report_with_effect(label: str, effect: float) -> LayerReport:
    stats = PairStats(0.0, 1.0, 1.0, 0.5, ("a", "b", 1.0), ("a", "c", 0.0))
    sep = Separation(0.5, 0.1, effect)
    return LayerReport(label, stats, stats, sep, sep, None, ())


def test_layers_rank_by_centred_separation_with_no_evidence_last() -> None:
    reports = [report_with_effect("nan", float("nan")), report_with_effect("low", -0.5),
               report_with_effect("high", 2.0), report_with_effect("mid", 0.7)]
    assert [r.label for r in rank_layers(reports)] == ["high", "mid", "low", "nan"]


def test_the_most_discriminative_space_is_the_first_of_the_best_and_no_evidence_loses() -> None:
    rng = np.random.default_rng(11)
    centres = np.repeat(rng.normal(size=(3, 8)) * 3, 2, axis=0)
    clear = (centres + rng.normal(size=(6, 8))).astype(np.float32)
    blurred = (centres + 4 * rng.normal(size=(6, 8))).astype(np.float32)
    artists = build_artists([make_track(i + 1, f"artist {i // 2}") for i in range(6)])
    ids = np.arange(1, 7)
    spaces = [Space("blurred", ids, blurred), Space("clear", ids, clear), Space("again", ids, clear)]
    best, effect = most_discriminative(artists, spaces)
    expected = separation(artist_vectors(artists, spaces[1])).effect
    assert best.label == "clear" and effect == pytest.approx(expected)
    assert expected > separation(artist_vectors(artists, spaces[0])).effect
    constant = Space("constant", ids, np.ones((6, 8), dtype=np.float32))  # every cosine 0 once centred: no effect
    assert most_discriminative(artists, [constant, spaces[1]])[0].label == "clear"
    alone, space = singletons(clear)
    best, effect = most_discriminative(alone, [Space("a", space.track_ids, clear), Space("b", space.track_ids, clear)])
    assert best.label == "a" and np.isnan(effect)


# ---- profiles ---------------------------------------------------------------------------------
def test_tracks_are_taken_round_robin_over_albums_in_id_order() -> None:
    """Albums X (ids 1, 2, 3), Y (4, 5) and none (6): a round takes each album's next track by id."""
    tracks = [make_track(i, "A", album=a) for i, a in ((3, "X"), (5, "Y"), (1, "X"), (6, None), (2, "X"), (4, "Y"))]
    for limit, ids in ((1, (1,)), (2, (1, 4)), (4, (1, 2, 4, 6)), (5, (1, 2, 4, 5, 6)), (9, (1, 2, 3, 4, 5, 6))):
        profile = build_artists(tracks, max_tracks=limit, min_tracks=1).profiles[0]
        assert profile.track_ids == ids and profile.total_tracks == 6, limit
        assert profile.confidence == pytest.approx(len(ids) / limit)


def test_an_artist_is_low_confidence_below_min_tracks_or_max_tracks_and_named_by_its_most_frequent_spelling() -> None:
    tracks = [make_track(1, "the beatles"), make_track(2, "The Beatles"), make_track(3, "The Beatles"),
              make_track(4, "Abba"), make_track(5, "abba feat. X"), make_track(6, "ABBA"), make_track(7, "ABBA"),
              make_track(8, "c"), make_track(9, None, composer="Zed"), make_track(10, "Zed")]
    artists = build_artists(tracks, max_tracks=4, min_tracks=3)
    assert artists.names == ["ABBA", "c", "The Beatles", "Zed"]  # sorted as read, whatever the case
    by_name = {p.name: p for p in artists.profiles}
    assert [by_name[n].low_confidence for n in artists.names] == [False, True, False, True]
    assert not by_name["Zed"].from_composer and artists.composer_fallback == 1
    assert build_artists([make_track(1, None, composer="Zed")]).profiles[0].from_composer
    assert not build_artists(tracks, max_tracks=2, min_tracks=3).profiles[0].low_confidence  # 2 of at most 2
    assert build_artists(tracks, max_tracks=2, min_tracks=2).profiles[1].low_confidence  # c: 1 of 2
    for bad in ({"max_tracks": 0}, {"min_tracks": 0}):
        with pytest.raises(ArtistError, match="max_tracks and min_tracks must be at least 1"):
            build_artists(tracks, **bad)


def test_a_tracks_artist_is_its_artist_tag_else_its_composer_and_a_placeholder_is_none() -> None:
    assert artist_of(make_track(1, "A feat. B", composer="C")) == ("A", False)
    assert artist_of(make_track(1, "Various Artists", composer="C; D")) == ("C", True)
    assert artist_of(make_track(1, None, composer="Unknown")) == (None, False)
    assert artist_of(make_track(1, " ", composer=None)) == (None, False)


def test_an_unknown_name_suggests_whole_words_first_and_says_how_many_when_there_are_more() -> None:
    names = ["Doug Kaufman", "Dougie Poynter", "Doug", "Douglas Dare", "Dougal", "Doug Martsch", "Dough Boys"]
    artists = build_artists([make_track(i + 1, n) for i, n in enumerate(names)])
    assert artists.index("Doug") == artists.names.index("Doug")
    assert artists.index("doug kaufman feat. someone") == artists.names.index("Doug Kaufman")
    with pytest.raises(ArtistError) as info:
        artists.index("dou")
    message = str(info.value)
    assert message.startswith("unknown artist 'dou' (7 artists in the store); did you mean ")
    assert message.endswith(" (7 in all)?")
    five = build_artists([make_track(i + 1, n) for i, n in enumerate(names[:5] + ["Zed", "Abba"])])
    with pytest.raises(ArtistError) as info:
        five.index("dou")
    assert str(info.value).count("'Dou") == 5 and str(info.value).endswith("'?")  # all five: no count said
    with pytest.raises(ArtistError) as info:
        artists.index("doug m")
    assert "did you mean 'Doug Martsch', " in str(info.value)  # the one whose words start with 'doug' and 'm' first
    with pytest.raises(ArtistError) as info:
        artists.index("kauf")
    assert "did you mean 'Doug Kaufman'?" in str(info.value)
    pair = build_artists([make_track(1, "Ann Leeds"), make_track(2, "Lee Ann")])
    with pytest.raises(ArtistError) as info:
        pair.index("ann lee")  # whole words of Lee Ann (all of them), the start of one of Ann Leeds'
    assert str(info.value).endswith("did you mean 'Lee Ann', 'Ann Leeds'?")


def test_artists_in_a_space_count_only_its_tracks_and_keep_their_totals() -> None:
    tracks = [make_track(i, "AB"[i % 2], album=f"album {i}") for i in range(1, 9)] + [make_track(9, "C")]
    artists = build_artists(tracks, max_tracks=3, min_tracks=3)
    same, missing = in_space(artists, Space("all", np.arange(1, 10), np.zeros((9, 2))), max_tracks=3, min_tracks=3)
    assert same is artists and missing == 0
    kept, missing = in_space(artists, Space("some", np.array([1, 2, 3, 4, 6]), np.zeros((5, 2))),
                             max_tracks=3, min_tracks=3)
    assert missing == 4 and kept.names == ["A", "B"]
    a, b = kept.profiles
    assert (a.track_ids, a.total_tracks, a.low_confidence) == ((2, 4, 6), 4, False)
    assert (b.track_ids, b.total_tracks, b.low_confidence, b.confidence) == ((1, 3), 4, True, pytest.approx(2 / 3))


# ---- references and metrics -------------------------------------------------------------------
def test_reference_entries_are_named_by_their_first_name_field_and_an_answer_must_name_its_artist() -> None:
    ref = parse_reference({"A": [{"artist": "X", "name": "B"}, {"artist_name": "C", "artist": "Y"}, {"artist": "D"},
                                 {"name": 3, "artist": "E"}],
                           "F": {"similarartists": {"@attr": {"artist": "F"}}}})
    assert ref == {"A": ["B", "C", "D", "E"], "F": []}
    for answer in ({"similarartists": {"artist": []}}, {"similarartists": {"artist": [], "@attr": "F"}},
                   {"similarartists": {"artist": [], "@attr": {"artist": 1}}}):
        with pytest.raises(ArtistError, match="a Last.fm answer must name its artist"):
            parse_reference(answer)
    with pytest.raises(ArtistError, match="reference entry 7 for 'A' has no artist name"):
        parse_reference({"A": [7]})


def test_a_reference_file_is_read_as_utf8_with_or_without_a_bom_and_refused_as_one_line_otherwise(
        tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_bytes("\ufeff".encode() + '{"Björk": ["Múm"]}'.encode())
    assert load_reference(path) == {"Björk": ["Múm"]}
    path.write_bytes('{"Björk": ["Múm"]}'.encode("latin-1"))
    with pytest.raises(ArtistError, match="reference file .* is not valid JSON"):
        load_reference(path)
    with pytest.raises(ArtistError, match="is a folder, not a tags file"):
        read_json(tmp_path, "tags")
    with pytest.raises(ArtistError, match="no such reference file"):
        load_reference(tmp_path / "none.json")
    loop = tmp_path / "loop.json"  # a link to itself: the system's ELOOP was a bare OSError to a library caller
    loop.symlink_to(loop)
    with pytest.raises(ArtistError, match=r"cannot read reference file .*loop\.json \(Too many levels"):
        load_reference(loop)
    path.write_text('{"A": ')
    with pytest.raises(ArtistError, match="reference file .* is not valid JSON"):
        load_reference(path)


def test_two_spellings_of_a_query_share_one_list_and_coverage_counts_each_artist_once() -> None:
    artists = build_artists([make_track(i, n) for i, n in enumerate(["The Cure", "Joy Division", "New Order"], 1)])
    cure, joy, new = (artists.index(n) for n in ("The Cure", "Joy Division", "New Order"))
    reference = {"The Cure": ["Joy Division", "X1", "joy division"], "cure": ["New Order", "The Cure", "X2"],
                 "Nobody": ["X1", "x-1", "X3"]}
    matched, cov = match_reference(reference, artists, missing_shown=2)
    assert matched == {cure: [joy, new]}
    assert cov == Coverage(query_artists=2, query_found=1, listed_artists=6, listed_found=3, usable_queries=1,
                           missing=("X1", "X2"))
    assert (cov.query_fraction, cov.listed_fraction) == (0.5, 0.5)
    assert cov.to_dict() == {**vars(cov), "query_fraction": 0.5, "listed_fraction": 0.5}
    empty = match_reference({}, artists)[1]
    assert (empty.query_fraction, empty.listed_fraction) == (0.0, 0.0)


@pytest.mark.filterwarnings("error")  # no queries: NaN said, not means of nothing (a RuntimeWarning)
def test_metrics_of_some_queries_are_those_of_their_lists_only() -> None:
    rng = np.random.default_rng(12)
    n = 9
    scores = rng.random((n, n))
    matched = {0: [3, 1], 2: [5], 4: [8, 6, 7], 6: [0]}
    brute = brute_force_ndcg(scores, {q: matched[q] for q in (2, 4)}, 3)
    some = evaluate(scores, matched, 3, queries=[2, 4, 5])  # 5 has no list: left out
    assert some.queries == 2 and some.k == 3 and some.ndcg == pytest.approx(brute)
    none = evaluate(scores, matched, 3, queries=[1, 5])
    assert none.queries == 0 and all(np.isnan([none.overlap, none.recall, none.ndcg, none.mrr]))


def test_the_random_baseline_is_what_a_random_ranking_scores_on_average() -> None:
    """One relevant artist among n - 1 others, at a uniformly random rank: recall@k = k / (n - 1), nDCG@1 = 1 / (n - 1)
    and MRR = the mean of 1 / rank."""
    n, k = 6, 2
    matched = {q: [(q + 1) % n] for q in range(n)}
    chance = random_baseline(n, matched, k, repeats=300, seed=3)
    assert chance.queries == n and chance.k == k
    assert chance.recall == pytest.approx(k / (n - 1), abs=0.03)
    assert chance.overlap == pytest.approx(k / (n - 1), abs=0.03)
    assert chance.mrr == pytest.approx(np.mean(1 / np.arange(1, n)), abs=0.03)
    assert random_baseline(n, matched, 1, repeats=300, seed=4).ndcg == pytest.approx(1 / (n - 1), abs=0.03)
    assert random_baseline(n, matched, k, queries=[0, 1]).queries == 2
    assert random_baseline(n, matched, k, repeats=1).queries == n  # one shuffle is a baseline too
