"""Artist similarity algorithms on synthetic data whose structure is known by construction."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import normalize

from mess.artists.credits import collaboration_similarity, split_credit, track_credits
from mess.artists.discrimination import layer_report, most_discriminative, rank_layers, separation
from mess.artists.hybrid import (
    blend,
    components,
    fit_hybrid,
    genre_similarity,
    parse_weights,
    reference_similarity,
    rescale,
)
from mess.artists.profiles import ArtistError, Space, build_artists
from mess.artists.reference import load_reference, match_reference, parse_reference
from mess.artists.setdist import chamfer_matrix, chamfer_row
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_matrix, similarity_row, top_k
from mess.artists.validate import evaluate, random_baseline
from mess.audio.names import label_key, main_artist, name_key, normalize_name
from mess.store import Track


def make_track(tid: int, artist: str | None, *, album: str | None = None, composer: str | None = None,
               genre: str | None = None, title: str | None = None) -> Track:
    return Track(id=tid, path=f"/music/{tid}.flac", content_hash=f"h{tid}", duration=10.0, artist=artist,
                 album=album, title=title or f"song {tid}", genre=genre, composer=composer)


def clustered_collection(n_artists: int, per_artist: int, dim: int, *, offset: float, spread: float,
                         signal: float = 1.0, seed: int = 0):
    """Tracks of n artists, each a cloud around its own centre plus a shared offset (anisotropy)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_artists, dim)) * signal
    common = rng.normal(size=dim) * offset
    tracks, rows = [], []
    for a, t in itertools.product(range(n_artists), range(per_artist)):
        tracks.append(make_track(len(tracks) + 1, f"Artist {a:02d}", album=f"album {t % 2}"))
        rows.append(common + centres[a] + spread * rng.normal(size=dim))
    return build_artists(tracks), np.array([t.id for t in tracks]), np.array(rows, dtype=np.float32)


# ---- credits ----------------------------------------------------------------------------------
def test_credit_parsing_finds_main_artist_and_guests() -> None:
    assert main_artist("Daft Punk feat. Pharrell Williams") == "Daft Punk"
    assert main_artist("Simon & Garfunkel") == "Simon & Garfunkel"
    assert split_credit("A ft. B & C") == ["A", "B", "C"]
    assert split_credit("Jay-Z x Kanye West, Frank Ocean") == ["Jay-Z", "Kanye West", "Frank Ocean"]
    assert split_credit("Earth, Wind & Fire", known={name_key("Earth, Wind & Fire")}) == ["Earth, Wind & Fire"]
    assert split_credit("Malcolm X") == ["Malcolm X"]
    assert track_credits("Daft Punk", "Get Lucky (feat. Pharrell Williams & Nile Rodgers)") == [
        "Daft Punk", "Pharrell Williams", "Nile Rodgers"]
    assert normalize_name("The Beatles") == normalize_name("beatles") == "beatles"
    assert normalize_name("Björk") == normalize_name("BJORK")



def test_a_tracks_label_is_its_main_artists_identity_a_genres_first_value_or_the_stripped_text() -> None:
    """What evaluation and fusion group tracks by: the artist or composer credit's main artist, spelled any way;
    a genre tag's first value; any other field's whole text; None for what is blank or names no artist."""
    for field in ("artist", "composer"):
        assert label_key(field, "The Beatles feat. Eric Clapton") == label_key(field, "beatles") == "beatles"
        assert label_key(field, " R.E.M.; Patti Smith") == "rem"
        assert label_key(field, "Various Artists") is None and label_key(field, "Unknown Artist") is None
        assert label_key(field, None) is None and label_key(field, "  ") is None
    assert label_key("genre", "; Ambient; Electronic") == "Ambient" and label_key("genre", None) is None
    assert label_key("album", " Vol. 1; Vol. 2 ") == "Vol. 1; Vol. 2"  # only genre is split into values
    assert label_key("title", "Intro feat. Someone") == "Intro feat. Someone"
    assert label_key("album", "   ") is None and label_key("album", "") is None

def test_collaboration_similarity_follows_graph_distance() -> None:
    names = ["A", "B", "C", "D"]
    sim = collaboration_similarity(names, [["A", "B"], ["A", "B"], ["B", "Guest"], ["C", "Guest"]])
    assert np.allclose(np.diag(sim), 1.0)
    assert np.allclose(sim, sim.T)
    assert sim[0, 1] > sim[1, 2] > 0.0  # direct collaborators > shared guest > ...
    assert sim[0, 3] == 0.0 and sim[2, 3] == 0.0  # ... no connection


# ---- profiles ---------------------------------------------------------------------------------
def test_artists_pick_tracks_across_albums_and_flag_low_confidence() -> None:
    tracks = [make_track(i, "The Band", album="first" if i <= 6 else "second") for i in range(1, 9)]
    tracks += [make_track(20, "the band feat. Guest", album="live")]
    tracks += [make_track(30, None, composer="J. S. Bach"), make_track(31, None, composer="J. S. Bach")]
    tracks += [make_track(40, None)]
    artists = build_artists(tracks, max_tracks=5, min_tracks=3)
    assert artists.names == ["J. S. Bach", "The Band"]
    band = artists.profiles[artists.index("band")]
    albums = {artists.tracks[t].album for t in band.track_ids}
    assert len(band.track_ids) == 5 and band.total_tracks == 9 and albums == {"first", "second", "live"}
    assert band.confidence == 1.0 and not band.low_confidence
    bach = artists.profiles[artists.index("j s bach")]
    assert bach.low_confidence and bach.confidence == pytest.approx(0.4) and bach.from_composer
    assert artists.composer_fallback == 2 and artists.unattributed == 1
    assert artists.row_of(tracks[8]) == artists.index("The Band")
    capped = build_artists(tracks, max_tracks=2, min_tracks=3)  # every artist was low-confidence, 9 tracks or 2
    assert not any(p.low_confidence for p in capped.profiles)


def test_unknown_artist_suggests_close_names() -> None:
    artists = build_artists([make_track(1, "Radiohead"), make_track(2, "Portishead"), make_track(3, "Massive Attack")])
    with pytest.raises(ArtistError, match="did you mean 'Radiohead'"):
        artists.index("Radiohed")
    with pytest.raises(ArtistError, match="unknown artist 'zzz'"):
        artists.index("zzz")


# ---- set-to-set and mean similarity -----------------------------------------------------------
def test_chamfer_equals_brute_force_definition() -> None:
    rng = np.random.default_rng(3)
    sizes = [3, 1, 5, 2]
    x = normalize(rng.normal(size=(sum(sizes), 8))).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    bounds = np.append(offsets, len(x))
    expected = np.zeros((4, 4))
    for a, b in itertools.product(range(4), repeat=2):
        cos = x[bounds[a]:bounds[a + 1]] @ x[bounds[b]:bounds[b + 1]].T
        expected[a, b] = (cos.max(axis=1).mean() + cos.max(axis=0).mean()) / 2
    assert np.allclose(chamfer_matrix(x, offsets), expected, atol=1e-5)
    assert np.allclose(chamfer_row(x, offsets, 2), expected[2], atol=1e-5)


def test_chamfer_sees_distributions_that_means_hide() -> None:
    """A plays two styles; C plays the same two; B plays only their blend. Means say B ~ A; sets say C ~ A."""
    u, v = np.eye(4)[0], np.eye(4)[1]
    blend_dir = normalize((u + v)[None])[0]
    rows = np.array([u, v, blend_dir, blend_dir, u * 0.98 + 0.02 * v, v], dtype=np.float32)
    tracks = [make_track(i + 1, name) for i, name in enumerate(["A", "A", "B", "B", "C", "C"])]
    artists = build_artists(tracks)
    vectors = artist_vectors(artists, Space("toy", np.arange(1, 7), rows), center=False)
    a, b, c = (artists.index(n) for n in "ABC")
    mean_sim, set_sim = similarity_matrix(vectors, "mean"), similarity_matrix(vectors, "chamfer")
    assert mean_sim[a, b] > mean_sim[a, c]
    assert set_sim[a, c] > set_sim[a, b]
    assert np.allclose(similarity_row(vectors, a, "chamfer"), set_sim[a])


def test_top_k_excludes_query_and_filtered_rows() -> None:
    scores = np.array([1.0, 0.2, 0.9, 0.5, 0.7])
    assert top_k(scores, 0, 3) == [2, 4, 3]
    assert top_k(scores, 0, 3, keep=np.array([True, True, False, True, True])) == [4, 3, 1]


# ---- discrimination ---------------------------------------------------------------------------
def test_separation_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(7)
    sizes = [4, 1, 3, 2]
    x = normalize(rng.normal(size=(10, 5)))
    vectors = ArtistVectors(x, np.concatenate([[0], np.cumsum(sizes)[:-1]]), centered=False)
    labels = np.repeat(np.arange(4), sizes)
    cos = x @ x.T
    pairs = [(i, j) for i in range(10) for j in range(10) if i != j]
    within = [cos[i, j] for i, j in pairs if labels[i] == labels[j]]
    between = [cos[i, j] for i, j in pairs if labels[i] != labels[j]]
    sep = separation(vectors)
    assert sep.within == pytest.approx(np.mean(within))
    assert sep.between == pytest.approx(np.mean(between))
    assert sep.effect == pytest.approx((np.mean(within) - np.mean(between)) / np.std(between))


def test_compressed_layer_stands_out_and_centring_restores_contrast() -> None:
    artists, ids, informative = clustered_collection(12, 5, 32, offset=8.0, spread=0.5)
    rng = np.random.default_rng(1)
    noise = informative.mean(axis=0) + rng.normal(size=informative.shape).astype(np.float32) * 0.2
    clean = informative - informative.mean(axis=0)
    reports = rank_layers([layer_report(artists, Space(name, ids, m))
                           for name, m in (("noise", noise), ("anisotropic", informative), ("clean", clean))])
    by_name = {r.label: r for r in reports}
    aniso, useless, good = by_name["anisotropic"], by_name["noise"], by_name["clean"]
    assert aniso.raw.min > 0.8 and aniso.raw.span < 0.1 and "compressed" in aniso.flags
    assert aniso.centered.span > 5 * aniso.raw.span
    assert aniso.verdict == "centre" and good.verdict == "useful" and useless.verdict == "useless"
    assert reports[-1].label == "noise"
    assert aniso.separation.effect > 1.0 > useless.separation.effect
    assert aniso.silhouette > useless.silhouette
    best, effect = most_discriminative(artists, [Space("noise", ids, noise), Space("clean", ids, clean)])
    assert best.label == "clean" and effect == pytest.approx(good.separation.effect)


# ---- references and metrics -------------------------------------------------------------------
def test_reference_shapes_are_normalised() -> None:
    ref = parse_reference({
        "A": ["B", "C"],
        "B": [{"name": "A", "score": 0.9}, {"artist_name": "C"}],
        "C": {"similarartists": {"artist": [{"name": "A", "match": "1"}]}},
    })
    assert ref == {"A": ["B", "C"], "B": ["A", "C"], "C": ["A"]}
    for bad in (["A", "B"], {"A": "B"}, {"A": [{"score": 1}]}, {"similarartists": {"artist": [{"name": "A"}]}}):
        with pytest.raises(ArtistError):
            parse_reference(bad)


def test_a_lastfm_answer_saved_as_it_came_is_its_artists_list() -> None:
    """The help says 'a Last.fm artist.getSimilar answer', but the answer as Last.fm sends it was refused ("reference
    for 'similarartists' is not a list"): only the answer nested under its artist's name was read."""
    answer = {"similarartists": {"artist": [{"name": "Portishead", "match": "1"}, {"name": "Tricky", "match": "0.8"}],
                                 "@attr": {"artist": "Massive Attack"}}}
    assert parse_reference(answer) == {"Massive Attack": ["Portishead", "Tricky"]}


def test_reference_matching_and_coverage() -> None:
    artists = build_artists([make_track(i, n) for i, n in enumerate(["The Cure", "Joy Division", "New Order"], 1)])
    matched, cov = match_reference({"cure": ["Joy Division", "Siouxsie", "The Cure"], "Unknown": ["New Order"],
                                    "New Order": ["Siouxsie"]}, artists)
    cure, joy = artists.index("The Cure"), artists.index("Joy Division")
    assert matched == {cure: [joy]}
    assert (cov.query_artists, cov.query_found, cov.usable_queries) == (3, 2, 1)
    assert (cov.listed_artists, cov.listed_found) == (4, 3)
    assert set(cov.missing) == {"Siouxsie", "Unknown"}


def brute_force_metrics(scores: np.ndarray, matched: dict[int, list[int]], k: int) -> tuple[float, ...]:
    """Per-query textbook definitions, averaged."""
    out = []
    for q, relevant in matched.items():
        ranking = [j for j in np.argsort(-scores[q], kind="stable") if j != q]
        gain = {r: (len(relevant) - p) / len(relevant) for p, r in enumerate(relevant)}
        dcg = sum(gain.get(j, 0) / np.log2(p + 2) for p, j in enumerate(ranking[:k]))
        idcg = sum(gain[r] / np.log2(p + 2) for p, r in enumerate(relevant[:k]))
        first = next(p for p, j in enumerate(ranking) if j in gain)
        out.append((len(set(ranking[:k]) & set(relevant[:k])) / min(k, len(relevant)),
                    len(set(ranking[:k]) & set(relevant)) / len(relevant), dcg / idcg, 1 / (first + 1)))
    return tuple(np.mean(out, axis=0))


def test_metrics_match_textbook_definitions() -> None:
    rng = np.random.default_rng(5)
    n, k = 30, 5
    scores = rng.random((n, n))
    matched = {q: [int(r) for r in rng.choice([i for i in range(n) if i != q], size=rng.integers(1, 9),
                                               replace=False)] for q in range(0, n, 2)}
    m = evaluate(scores, matched, k)
    assert (m.overlap, m.recall, m.ndcg, m.mrr) == pytest.approx(brute_force_metrics(scores, matched, k))
    assert m.queries == len(matched)
    perfect = np.zeros((n, n))
    for q, relevant in matched.items():
        perfect[q, relevant] = np.linspace(2, 1, len(relevant))
    best = evaluate(perfect, matched, k)
    assert best.ndcg == pytest.approx(1.0) and best.mrr == 1.0 and best.overlap == 1.0
    chance = random_baseline(n, matched, k)
    assert chance.ndcg < best.ndcg and 0 < chance.mrr < 1


# ---- hybrid -----------------------------------------------------------------------------------
def test_genre_jaccard_from_tags() -> None:
    tracks = [make_track(1, "A", genre="rock; indie"), make_track(2, "A", genre="pop"),
              make_track(3, "B", genre="Rock"), make_track(4, "C")]
    artists = build_artists(tracks)
    sim = genre_similarity(artists, extra_tags={"C": ["jazz"], "Nobody": ["x"]})
    a, b, c = (artists.index(n) for n in "ABC")
    assert sim[a, b] == pytest.approx(1 / 3) and sim[a, c] == 0.0 and sim[a, a] == 1.0


def test_reference_component_never_uses_the_query_list_when_reverse_only() -> None:
    matched = {0: [1, 2], 1: [0]}
    both = reference_similarity(matched, 3)
    reverse = reference_similarity(matched, 3, reverse_only=True)
    assert both[0, 2] == 0.5 and reverse[0, 2] == 0.0  # only 0's own list says 0 ~ 2
    assert reverse[0, 1] == 1.0  # 1's list names 0


def test_hybrid_learns_weights_that_beat_each_signal_on_held_out_artists() -> None:
    """60 artists in 10 scenes; audio and genre tags each carry the scene, noisily; lists name scene-mates."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 6)
    genres = [f"scene{g if rng.random() < 0.6 else rng.integers(10)}; tag{rng.integers(30)}" for g in groups]
    artists = build_artists([make_track(i + 1, f"artist {i:02d}", genre=g) for i, g in enumerate(genres)])
    assert artists.names == [f"artist {i:02d}" for i in range(60)]
    audio = normalize(rng.normal(size=(60, 16)) + 0.7 * rng.normal(size=(10, 16))[groups])
    matched = {q: [int(j) for j in np.flatnonzero(groups == groups[q]) if j != q] for q in range(60)}
    base = components(audio @ audio.T, artists)
    assert set(base) == {"audio", "genre"}  # no collaborations in these credits
    fit = fit_hybrid(base, matched, k=5, test_fraction=0.5, seed=0)
    assert fit.train_queries == fit.test_queries == 30
    assert set(fit.weights) == {"audio", "genre", "reference"} and min(fit.weights.values()) > 0
    assert sum(fit.weights.values()) == pytest.approx(1.0, abs=1e-3)
    test = {name: m.ndcg for name, m in fit.test.items()}
    assert test["hybrid"] > max(test["audio"], test["genre"], test["equal"])
    assert test["hybrid"] > random_baseline(60, matched, 5).ndcg


def test_blend_rescale_and_weight_parsing() -> None:
    sim = np.array([[1.0, 0.9, 0.95], [0.9, 1.0, 0.92], [0.95, 0.92, 1.0]])
    scaled = rescale(sim)
    assert scaled[0, 1] == 0.0 and scaled[0, 2] == 1.0 and rescale(np.ones((3, 3))) is None
    weights = parse_weights("audio=3, genre=1")
    assert weights == {"audio": 0.75, "genre": 0.25}
    mixed = blend({"audio": scaled, "genre": np.eye(3)}, weights)
    assert np.allclose(mixed, 0.75 * scaled + 0.25 * np.eye(3))
    for bad in ("tempo=1", "audio=x", "audio=-1,genre=2", "audio=0", "audio=nan", "audio=inf", "audio=1,genre=nan"):
        with pytest.raises(ArtistError):
            parse_weights(bad)


# ---- names that the credit parser or normalisation could lose ---------------------------------
def test_bare_with_is_part_of_a_name_and_a_guest_only_in_brackets() -> None:
    assert main_artist("Dance With the Dead") == "Dance With the Dead"
    assert split_credit("Dance With the Dead feat. Gunship") == ["Dance With the Dead", "Gunship"]
    assert main_artist("Artist (with Guest)") == "Artist" and split_credit("A [with B & C]") == ["A", "B", "C"]
    assert track_credits("A", "Song (with B)") == ["A", "B"]
    artists = build_artists([make_track(i, "Dance With the Dead") for i in (1, 2)] + [make_track(3, "Dance")])
    assert artists.names == ["Dance", "Dance With the Dead"]
    assert artists.index("dance with the dead") == 1


def test_symbol_only_names_stay_distinct_and_unknown_ones_are_refused() -> None:
    artists = build_artists([make_track(1, "!!!"), make_track(2, "!!!"), make_track(3, "🎹"), make_track(4, "Other")])
    bangs, keys, other = artists.index("!!!"), artists.index("🎹"), artists.index("other")
    assert len({bangs, keys, other}) == 3
    with pytest.raises(ArtistError, match=r"unknown artist '\?\?\?'"):
        artists.index("???")
    matched, cov = match_reference({"🎹": ["!!!", "???"], "Other": ["!!!"]}, artists)
    assert matched == {keys: [bangs], other: [bangs]}
    assert (cov.query_found, cov.listed_artists, cov.listed_found, cov.usable_queries) == (2, 2, 1, 2)
    sim = collaboration_similarity(["!!!", "🎹", "Other"], [["!!!", "🎹"]])
    assert sim.shape == (3, 3) and sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == 0.0


def test_deeply_nested_reference_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"a": ' * 3000 + "1" + "}" * 3000)
    with pytest.raises(ArtistError, match="is not valid JSON"):
        load_reference(path)


@pytest.mark.parametrize(("text", "kind"), [("null", "null"), ("[1]", "an array"), ('"x"', "a string"),
                                            ("3.5", "a number"), ("true", "true")])
def test_a_reference_that_is_not_an_object_is_named_in_json_words(tmp_path: Path, text: str, kind: str) -> None:
    """A reference file holding null was refused as 'got a JSON NoneType' (Python's word for it)."""
    path = tmp_path / "ref.json"
    path.write_text(text)
    with pytest.raises(ArtistError, match=f"; got {kind}$"):
        load_reference(path)


def test_mean_similarity_is_the_cosine_of_mean_unit_track_vectors_centred_on_the_whole_space() -> None:
    """Written out here: subtract the mean of every track of the space (also those no profile picked), scale each
    track to unit length, average an artist's picked tracks, and take cosines of those means."""
    artists, ids, rows = clustered_collection(6, 7, 16, offset=3.0, spread=1.5)  # 7 tracks each, 5 picked
    assert all(len(p.track_ids) == 5 for p in artists.profiles)
    row_of = {int(t): i for i, t in enumerate(ids)}
    for center, shift in ((True, rows.mean(axis=0)), (False, 0.0)):
        moved = rows.astype(np.float64) - shift
        means = normalize(np.array([normalize(moved[[row_of[t] for t in p.track_ids]]).mean(axis=0)
                                    for p in artists.profiles]))
        vectors = artist_vectors(artists, Space("x", ids, rows), center=center)
        np.testing.assert_allclose(similarity_matrix(vectors, "mean"), means @ means.T, atol=1e-5)
        np.testing.assert_allclose(similarity_row(vectors, 2, "mean"), means @ means[2], atol=1e-5)


def test_weights_too_large_to_add_up_keep_their_proportions() -> None:
    """'audio=1.5e308,genre=0.5e308' made both weights 0 (their sum overflowed to inf), and `similar --weights` then
    said the weights were all on components the collection has no information for."""
    assert parse_weights("audio=1.5e308,genre=0.5e308") == pytest.approx({"audio": 0.75, "genre": 0.25})
    assert parse_weights("audio=1e308,genre=1e308,collab=1e308") == pytest.approx(
        dict.fromkeys(("audio", "genre", "collab"), 1 / 3))


def test_artists_sharing_a_track_score_a_cosine_within_minus_one_and_one() -> None:
    """Artist i's one track is a random direction, artist i + 20's the same one and i + 40's its opposite: their
    cosines are 1 and -1 by definition. By --method chamfer float32 rounding made them 1.0000002 (a similarity
    above 1, on the diagonal too, in `artists similar --json` and the matrix); the mean method clipped them."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16))
    rows = np.concatenate([base, base, -base]).astype(np.float32)
    artists = build_artists([make_track(i + 1, f"artist {i:02d}") for i in range(60)])
    vectors = artist_vectors(artists, Space("toy", np.arange(1, 61), rows), center=False)
    for method in ("mean", "chamfer"):
        sim = similarity_matrix(vectors, method)
        assert sim.max() <= 1.0 and sim.min() >= -1.0, method
        np.testing.assert_allclose(np.diag(sim[:20, 20:40]), 1.0, atol=1e-6)
        np.testing.assert_allclose(np.diag(sim[:20, 40:]), -1.0, atol=1e-6)
        for i in range(60):
            row = similarity_row(vectors, i, method)
            assert row.max() <= 1.0 and row.min() >= -1.0, method
            np.testing.assert_allclose(row, sim[i], atol=1e-6)
