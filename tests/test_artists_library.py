"""`mess artists` and the server's artist routes on artist tags as a real library has them: real FLAC files
tagged with mutagen, extracted with the dsp model."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from mutagen.flac import FLAC
from typer.testing import CliRunner

SR = 22050
# file stem -> ARTIST values (several: one Vorbis comment each)
CREDITS = {
    "gidle0": ["(G)I-DLE"], "gidle1": ["(G)I-DLE"],  # a band whose name starts with a bracket
    "dunkel0": ["[dunkelbunt]"],
    "alpha0": ["Alpha"], "alpha1": ["Alpha feat. Beta"], "beta0": ["Beta"],
    "dollar0": ["$uicideboy$"], "dollar1": ["Cash $_^$"],  # TeX to matplotlib, the second not even valid TeX
    "rem0": ["R.E.M."], "rem1": ["REM"], "blink0": ["Blink-182"], "blink1": ["Blink 182"], "blink2": ["blink182"],
    "long0": ["Berliner Philharmoniker, Herbert von Karajan, Anne-Sophie Mutter, Wiener Singverein, "
              "Chor der Deutschen Oper Berlin"],
}

TWO_ARTISTS = {stem: {"artist": [stem[:-1].title()]} for stem in ("alpha0", "alpha1", "beta0", "beta1")}


def tagged_store(root: Path, tags: dict[str, dict[str, list[str]]]) -> Path:
    """The store at ``root``/store of one 3-second FLAC tone per entry of ``tags`` (file stem -> Vorbis comments,
    each value its own comment), each its own pitch, extracted with the dsp model."""
    from mess.cli.main import app as mess

    music = root / "music"
    music.mkdir()
    t = np.arange(SR * 3) / SR
    for i, (stem, comments) in enumerate(tags.items()):
        path = music / f"{stem}.flac"
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110 * (1 + i / 3) * t)).astype(np.float32), SR)
        flac = FLAC(path)
        flac.update(comments)
        flac.save()
    out = CliRunner().invoke(mess, ["extract", str(music), "--model", "dsp", "--window", "2",
                                    "--store", str(root / "store")])
    assert out.exit_code == 0, out.output
    return root / "store"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of :data:`CREDITS`."""
    return tagged_store(tmp_path_factory.mktemp("library"), {s: {"artist": a} for s, a in CREDITS.items()})


def mess_json(store: Path, *args: str) -> dict:
    """The JSON answer of ``mess ARGS --store STORE --json``; the command must succeed."""
    from mess.cli.main import app as mess

    out = CliRunner().invoke(mess, [*args, "--store", str(store), "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_a_name_that_starts_with_a_bracket_keeps_it(library: Path) -> None:
    """'(G)I-DLE' was shown as 'G)I-DLE' and '[dunkelbunt]' as 'dunkelbunt]': the main artist lost a leading
    bracket."""
    found = mess_json(library, "artists", "similar", "(G)I-DLE", "--layer", "mfcc", "--min-tracks", "1")
    assert found["artist"] == "(G)I-DLE"
    assert "[dunkelbunt]" in [r["artist"] for r in found["results"]]


@pytest.fixture(scope="module")
def client(library: Path) -> Iterator[TestClient]:
    from mess.serve.app import create_app

    with TestClient(base_url="http://127.0.0.1", app=create_app(library)) as c:
        yield c


def test_similar_artists_of_a_tracks_whole_credit_are_its_main_artists(library: Path, client: TestClient) -> None:
    """The web page asks /api/artists/similar with a track's artist tag: for 'Alpha feat. Beta' it showed
    "unknown artist 'Alpha feat. Beta'" (404), though the track is Alpha's in every artist list."""
    tracks = client.get("/api/tracks", params={"q": "alpha1"}).json()["items"]
    assert [t["artist"] for t in tracks] == ["Alpha feat. Beta"]
    answer = client.get("/api/artists/similar", params={"name": tracks[0]["artist"], "layer": "mfcc"})
    assert answer.status_code == 200, answer.json()
    assert answer.json()["artist"] == "Alpha" and answer.json()["tracks"] == 2
    assert mess_json(library, "artists", "similar", "alpha feat. beta", "--layer", "mfcc")["artist"] == "Alpha"


def test_the_heatmap_labels_names_with_dollar_signs_as_written(library: Path, tmp_path: Path) -> None:
    """matplotlib read '$...$' in a name as TeX: '$uicideboy$' was labelled 'uicideboy' in italics, and the
    matrix of a collection with 'Cash $_^$' ended in a traceback (ValueError from matplotlib's mathtext)."""
    found = mess_json(library, "artists", "matrix", "--layer", "mfcc", "--out", str(tmp_path / "m"))
    assert {"$uicideboy$", "Cash $_^$"} <= set(found["artists"])
    assert (tmp_path / "m.png").stat().st_size > 0


def test_a_long_name_leaves_the_heatmap_its_layout(library: Path, tmp_path: Path) -> None:
    """One long credit made matplotlib give up its layout ("UserWarning: Tight layout not applied" on the
    terminal) and every label ran off the figure's edge; the heatmap cuts it, the CSV keeps it whole."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = mess_json(library, "artists", "matrix", "--layer", "mfcc", "--out", str(tmp_path / "m"))
    assert [str(w.message) for w in caught if "layout" in str(w.message)] == []
    assert CREDITS["long0"][0] in found["artists"] and CREDITS["long0"][0] in (tmp_path / "m.csv").read_text()


@pytest.mark.parametrize("suffix", [".wav", ".aiff"])
def test_every_artist_of_a_wav_or_aiff_id3_chunk_is_read(tmp_path: Path, suffix: str) -> None:
    """A WAV's or AIFF's ID3v2.4 TPE1 'Alpha' + 'Beta' (as Mp3tag and foobar2000 write it) was read as 'Alpha' alone:
    FFmpeg, which read those files' tags, keeps a list's first value, so Beta vanished from the catalogue and the
    collaborations, as two FLAC ARTIST comments no longer do."""
    import mutagen
    from mutagen.id3 import TCOM, TCON, TIT2, TPE1

    from mess.audio.tags import read_tags

    path = tmp_path / f"duo{suffix}"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32), SR)
    audio = mutagen.File(path)
    audio.add_tags()
    for frame in (TPE1(encoding=3, text=["Alpha", "Beta"]), TCOM(encoding=3, text=["Gamma", "Delta"]),
                  TIT2(encoding=3, text=["Song"]), TCON(encoding=3, text=["(17)"])):
        audio.tags.add(frame)
    audio.save()
    assert read_tags(path) == {"artist": "Alpha; Beta", "album": None, "title": "Song", "genre": "Rock",
                               "composer": "Gamma; Delta"}


def test_a_wavs_riff_info_fills_what_its_id3_chunk_lacks(tmp_path: Path) -> None:
    """A WAV with an INFO artist and an ID3 chunk holding only a title keeps its artist (FFmpeg reads both)."""
    import mutagen
    from mutagen.id3 import TIT2

    from mess.audio.tags import read_tags

    path = tmp_path / "info.wav"
    with sf.SoundFile(path, "w", SR, 1) as wav:
        wav.artist, wav.title = "Info Artist", "Info Title"
        wav.write(np.zeros(SR, np.float32))
    audio = mutagen.File(path)
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=["ID3 Title"]))
    audio.save()
    assert (read_tags(path)["artist"], read_tags(path)["title"]) == ("Info Artist", "ID3 Title")


def test_centring_two_artists_says_their_scores_say_little(tmp_path: Path) -> None:
    """Two artists scored about -0.93 centred (the mean of so few points away from each) and nothing said so, in
    `mess artists similar` or the server's answer the web page shows."""
    from mess.cli.main import app as mess

    store = str(tagged_store(tmp_path, TWO_ARTISTS))
    runner = CliRunner()
    said = "only 2 artists: centring on the collection's mean makes so few look opposite"
    scores = {}
    for center in ("--center", "--no-center"):
        out = runner.invoke(mess, ["artists", "similar", "alpha", "-l", "mfcc", center, "--json", "--store", store])
        assert out.exit_code == 0, out.output
        assert (said in " ".join(out.stderr.split())) == (center == "--center"), out.stderr
        scores[center] = json.loads(out.stdout)["results"][0]["score"]
    assert scores["--center"] < -0.5 < 0 < scores["--no-center"]
    from mess.serve.app import create_app

    with TestClient(base_url="http://127.0.0.1", app=create_app(Path(store))) as client:
        for center in ("true", "false"):
            answer = client.get("/api/artists/similar", params={"name": "alpha", "layer": "mfcc", "center": center})
            note = answer.json()["note"]
            assert (note is not None and note.startswith(said) and "center=false compares" in note) == (
                center == "true"), answer.json()


def test_a_composer_credit_that_is_the_artist_names_its_collaborators(tmp_path: Path) -> None:
    """Without an artist tag the composer is the artist, and its tag's further values were to be collaborators as an
    artist tag's are; the collaboration component read artist tags only, so in a composer-tagged soundtrack
    `--weights collab=1` ended in "no information" though 'Clara; Dora' composed together."""
    composers = (["Clara", "Dora"], ["Clara"], ["Dora"], ["Erin"], ["Erin"])
    store = tagged_store(tmp_path, {f"{i}": {"composer": c} for i, c in enumerate(composers)})
    found = mess_json(store, "artists", "similar", "clara", "-l", "mfcc", "--weights", "collab=1")
    assert [r["artist"] for r in found["results"]] == ["Dora", "Erin"]
    assert found["results"][0]["components"]["collab"] == 1.0 and found["results"][1]["score"] == 0.0


def test_the_hybrid_of_two_artists_says_why_it_cannot_be_scaled(tmp_path: Path) -> None:
    """With two artists every --weights / --hybrid answer was "audio similarity is constant across artists; choose
    another layer", and every other layer said the same: one pair has one similarity whatever the layer."""
    from mess.cli.main import app as mess

    store = str(tagged_store(tmp_path, TWO_ARTISTS))
    for layer in ("mfcc", "chroma"):
        out = CliRunner().invoke(mess, ["artists", "similar", "alpha", "-l", layer, "--weights", "audio=1",
                                        "--store", store])
        assert out.exit_code == 1 and "choose another layer" not in out.stderr, out.stderr
        assert "2 artists make only one pair; compare them without --hybrid / --weights" in " ".join(
            out.stderr.split()), out.stderr


def test_the_composer_of_an_m4a_file_is_read(tmp_path: Path) -> None:
    """An M4A's composer (the ©wrt atom iTunes writes) was never read: mutagen's easy mode has no name for it, so a
    composer-tagged AAC or ALAC track had no composer in the catalogue and, without an artist tag, no artist."""
    import av
    from mutagen.mp4 import MP4

    from mess.audio.tags import read_tags

    path = tmp_path / "piece.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, SR), np.float32), format="fltp", layout="mono")
        frame.sample_rate = SR
        for packet in (*stream.encode(frame), *stream.encode(None)):
            container.mux(packet)
    tags = MP4(path)
    tags.update({"\xa9wrt": ["Clara", "Dora"], "\xa9nam": ["Song"]})
    tags.save()
    assert read_tags(path) == {"artist": None, "album": None, "title": "Song", "genre": None,
                               "composer": "Clara; Dora"}


def test_spellings_that_differ_only_in_punctuation_are_one_artist(library: Path) -> None:
    """'R.E.M.' and 'REM', 'Blink-182' and 'blink182' were two artists each (punctuation became a space, so
    'r e m' was not 'rem'), though spellings that differ only in punctuation are documented to be one."""
    found = mess_json(library, "artists", "similar", "REM", "-l", "mfcc", "-k", "20", "--min-tracks", "1")
    assert (found["artist"], found["tracks"]) == ("R.E.M.", 2)
    rows = {r["artist"]: r["tracks"] for r in found["results"]}
    assert rows["Blink 182"] == 3 and not {"REM", "Blink-182", "blink182"} & set(rows)


def test_various_artists_is_no_artist(tmp_path: Path) -> None:
    """A compilation tagged 'Various Artists' (or a rip's 'Unknown Artist') was an artist of its own: listed among
    similar artists, and `mess similar --exclude-same-artist` from one of its tracks left out every other one."""
    tags = {"va0": {"artist": ["Various Artists"]}, "va1": {"artist": ["Various Artists"]},
            "va2": {"artist": ["VA"], "composer": ["Clara"]}, "unk0": {"artist": ["Unknown Artist"]},
            "a0": {"artist": ["Alpha"]}, "a1": {"artist": ["Alpha"]}, "c0": {"composer": ["Clara"]},
            "d0": {"artist": ["Dora"]}}
    store = tagged_store(tmp_path, tags)
    found = mess_json(store, "artists", "similar", "alpha", "-l", "mfcc", "--min-tracks", "1")
    assert {r["artist"]: r["tracks"] for r in found["results"]} == {"Clara": 2, "Dora": 1}
    similar = mess_json(store, "similar", str(tmp_path / "music" / "va0.flac"), "--exclude-same-artist", "-k", "10")
    assert {Path(r["path"]).stem for r in similar["results"]} >= {"va1", "unk0"}


def test_hide_low_that_leaves_out_every_artist_says_so(tmp_path: Path) -> None:
    """`similar --hide-low` printed an empty table, without a word, when every other artist was low-confidence."""
    from mess.cli.main import app as mess

    store = tagged_store(tmp_path, TWO_ARTISTS)
    out = CliRunner().invoke(mess, ["artists", "similar", "alpha", "-l", "mfcc", "--hide-low", "--json",
                                    "--store", str(store)])
    assert out.exit_code == 0 and json.loads(out.stdout)["results"] == [], out.output
    assert "--hide-low left out every other artist (1): each has fewer than --min-tracks 3 tracks" in " ".join(
        out.stderr.split()), out.stderr


def test_heatmap_labels_fall_back_to_fonts_that_draw_them_and_say_what_none_draws(tmp_path: Path) -> None:
    """A Japanese or Korean name was drawn as boxes even where an installed font draws it (matplotlib falls back
    to no other font), and the terminal got one UserWarning per missing character and drawing (20 for two names)."""
    from mess.artists.heatmap import label_fonts
    from mess.cli.main import app as mess

    families, missing = label_fonts(["\u2312 arc"])  # '⌒': not in DejaVu Sans, in matplotlib's DejaVu Sans Mono
    assert families[0] == "DejaVu Sans" and "DejaVu Sans Mono" in families and missing == ""
    names = {"sakamoto0": ["坂本龍一"], "bts0": ["방탄소년단"], "arc0": ["\u2312 arc"]}
    store = tagged_store(tmp_path, {stem: {"artist": a} for stem, a in names.items()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = CliRunner().invoke(mess, ["artists", "matrix", "-l", "mfcc", "--no-center", "--out",
                                        str(tmp_path / "m"), "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    unfit = label_fonts(["坂本龍一", "방탄소년단"])[1]  # all of them where no CJK font is installed, as here
    said = f"note: no installed font draws {len(unfit)} characters of the artist names"
    assert (said in " ".join(out.stderr.split())) == bool(unfit), out.stderr


def _id3v1(title: bytes, artist: bytes) -> bytes:
    """An ID3v1 tag (128 bytes at a file's end), its text in the bytes given."""
    return b"TAG" + title.ljust(30, b"\0") + artist.ljust(30, b"\0") + bytes(30) + b"2000" + bytes(30) + b"\xff"


def test_tags_that_are_not_utf8_are_read_as_windows_1252(tmp_path: Path) -> None:
    """A WAV whose RIFF INFO artist is in Windows-1252 (as Windows tools write it) had no artist, and a TTA file with
    a Latin-1 ID3v1 tag was not extracted at all ("failed: UnicodeDecodeError"): PyAV read tags as strict UTF-8."""
    import av

    from mess.audio.tags import read_tags
    from mess.cli.main import app as mess
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    wav = music / "info.wav"
    with sf.SoundFile(wav, "w", SR, 1, subtype="PCM_16") as out:
        out.artist = "Beyoncé"  # libsndfile writes UTF-8: 'é' is 2 bytes, 1 in Windows-1252, and a space pads it
        out.write((0.3 * np.sin(2 * np.pi * 220 * np.arange(SR * 3) / SR)).astype(np.float32))
    wav.write_bytes(wav.read_bytes().replace("Beyoncé".encode(), "Beyoncé ".encode("cp1252")))
    assert read_tags(wav)["artist"] == "Beyoncé"
    tta = music / "tone.tta"
    with av.open(str(tta), "w") as container:
        stream = container.add_stream("tta", rate=SR, layout="mono")
        tone = (9000 * np.sin(2 * np.pi * 330 * np.arange(SR * 3) / SR)).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = SR
        for packet in (*stream.encode(frame), *stream.encode(None)):
            container.mux(packet)
    tta.write_bytes(tta.read_bytes() + _id3v1("Café".encode("latin-1"), "Sigur Rós".encode("latin-1")))
    out = CliRunner().invoke(mess, ["extract", str(music), "--model", "dsp", "--window", "2",
                                    "--store", str(tmp_path / "store")])
    assert out.exit_code == 0 and "2 embedded" in " ".join(out.output.split()), out.output
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        tags = {Path(t.path).name: (t.artist, t.title) for t in store.tracks()}
    assert tags == {"info.wav": ("Beyoncé", None), "tone.tta": ("Sigur Rós", "Café")}


def test_similar_artists_of_a_track_follow_its_credit_as_mess_artists_reads_it(tmp_path: Path) -> None:
    """The web page asked /api/artists/similar with a track's artist tag, or else its composer: a compilation track
    tagged 'Various Artists' with a composer got "unknown artist" (404), though `mess artists` credits it to the
    composer. The page now sends the track (``track=ID``) and the server credits it."""
    from mess.serve.app import create_app

    tags = {"va0": {"artist": ["Various Artists"], "composer": ["Clara"]}, "c0": {"composer": ["Clara"]},
            "va1": {"artist": ["Various Artists"]}, "a0": {"artist": ["Alpha feat. Beta"]}, "d0": {"artist": ["Dora"]}}
    store = tagged_store(tmp_path, tags)
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as client:
        ids = {Path(t["file"]).stem: t["id"] for t in client.get("/api/tracks").json()["items"]}
        answer = client.get("/api/artists/similar", params={"track": ids["va0"], "layer": "mfcc"})
        assert answer.status_code == 200, answer.json()
        assert (answer.json()["artist"], answer.json()["tracks"]) == ("Clara", 2)
        assert client.get("/api/artists/similar", params={"track": ids["a0"], "layer": "mfcc"}).json()["artist"] \
            == "Alpha"
        none = client.get("/api/artists/similar", params={"track": ids["va1"]})
        assert none.status_code == 404 and "names an artist ('Various Artists' names none)" in none.json()["detail"]
        assert client.get("/api/artists/similar", params={"track": 999}).status_code == 404
        for params in ({}, {"track": ids["d0"], "name": "Dora"}):
            bad = client.get("/api/artists/similar", params=params)
            assert bad.status_code == 400 and "give one of name" in bad.json()["detail"]


def test_a_title_crediting_an_orchestra_or_lyrics_credits_no_guest(tmp_path: Path) -> None:
    """"Theme (with Orchestra)" by Alpha and "Battle (with Orchestra)" by Beta made 'Orchestra' a guest of both, so
    `--weights collab=1` called Alpha and Beta collaborators; so did "(with Lyrics)" and "feat. Full Choir". A
    guest made only of words that name no one is no credit; "(with Dora Lee)", "feat. the London Symphony
    Orchestra" and "(with The Band)" where The Band is an artist of the collection still are."""
    tags = {"a0": {"artist": ["Alpha"], "title": ["Theme (with Orchestra)"]},
            "a1": {"artist": ["Alpha"], "title": ["Waltz (with Dora Lee)"]},
            "a2": {"artist": ["Alpha feat. the Strings & Full Choir"], "title": ["Hymn [with Lyrics]"]},
            "b0": {"artist": ["Beta"], "title": ["Battle (with Orchestra)"]},
            "b1": {"artist": ["Beta feat. Full Choir"], "title": ["Hymn (with Lyrics)"]},
            "g0": {"artist": ["Gamma"], "title": ["Night (feat. Dora Lee)"]},
            "d0": {"artist": ["Delta feat. the London Symphony Orchestra"], "title": ["Day"]},
            "e0": {"artist": ["Epsilon"], "title": ["Dusk (with The London Symphony Orchestra)"]},
            "z0": {"artist": ["Zeta"], "title": ["Road (with The Band)"]}, "band0": {"artist": ["The Band"]}}
    store = tagged_store(tmp_path, tags)
    found = mess_json(store, "artists", "similar", "alpha", "-l", "mfcc", "--min-tracks", "1",
                      "--weights", "collab=1")
    scores = {r["artist"]: r["components"]["collab"] for r in found["results"]}
    assert scores["Gamma"] > 0 and scores["Beta"] == scores["Delta"] == 0, scores
    found = mess_json(store, "artists", "similar", "delta", "-l", "mfcc", "--min-tracks", "1",
                      "--weights", "collab=1")
    assert found["results"][0]["artist"] == "Epsilon" and found["results"][0]["components"]["collab"] > 0
    found = mess_json(store, "artists", "similar", "zeta", "-l", "mfcc", "--min-tracks", "1",
                      "--weights", "collab=1")  # a guest of generic words that is an artist of the collection
    assert found["results"][0]["artist"] == "The Band" and found["results"][0]["components"]["collab"] > 0


def test_traditional_and_anonymous_are_no_artist_and_the_the_is_not_the(tmp_path: Path) -> None:
    """Folk tunes composed by 'Traditional' (or 'Trad.', 'Anonymous', 'Anon.') made one artist of every such track,
    listed among similar artists, and `--exclude-same-artist` from one left out the others; they name no artist,
    as 'Various Artists' does. 'The The' was the same artist as 'The' (both lost a leading 'the')."""
    tags = {"t0": {"composer": ["Traditional"]}, "t1": {"composer": ["Trad."]}, "t2": {"composer": ["Anonymous"]},
            "t3": {"artist": ["Anon."], "composer": ["Clara"]}, "tt0": {"artist": ["The The"]},
            "tt1": {"artist": ["the the"]}, "the0": {"artist": ["The"]}, "a0": {"artist": ["Alpha"]}}
    store = tagged_store(tmp_path, tags)
    found = mess_json(store, "artists", "similar", "alpha", "-l", "mfcc", "--min-tracks", "1")
    assert {r["artist"]: r["tracks"] for r in found["results"]} == {"Clara": 1, "The The": 2, "The": 1}
    similar = mess_json(store, "similar", str(tmp_path / "music" / "t0.flac"), "--exclude-same-artist", "-k", "10")
    assert {Path(r["path"]).stem for r in similar["results"]} >= {"t1", "t2"}


def test_the_track_filters_find_each_value_of_a_multi_valued_tag(tmp_path: Path) -> None:
    """Genres became multi-valued ('Rock; Pop') like artists, and `/api/tracks?genre=Pop` matched only the whole
    tag: a track tagged Rock and Pop was found by neither genre alone (nor by its second ARTIST)."""
    from mess.serve.app import create_app

    store = tagged_store(tmp_path, {"both": {"genre": ["Rock", "Pop"], "artist": ["Alpha", "Beta"]},
                                    "pop": {"genre": ["Pop"], "artist": ["Beta"]},
                                    "jazz": {"genre": ["Jazz"], "album": ["Rock; Pop"]}})
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as c:
        def found(**params: str) -> set[str]:
            answer = c.get("/api/tracks", params={**params, "model": "any"})
            assert answer.status_code == 200, answer.json()
            return {Path(t["file"]).stem for t in answer.json()["items"]}

        assert found(genre="pop") == {"both", "pop"}
        assert found(genre="Rock") == found(genre="rock; pop") == {"both"}
        assert found(artist="beta") == {"both", "pop"}
        assert found(album="Rock") == set()  # an album is one value, whatever its punctuation
        assert found(album="Rock; Pop") == {"jazz"}


@pytest.mark.parametrize("saved", [b'{"weights": [0.6, 0.4]}', b'{"weights": null}',
                                   b'{"weights": {"audio": 1}, "space": "caf\xe9"}'],
                         ids=["a-list", "null", "latin-1"])
def test_a_hand_edited_weights_file_that_is_malformed_is_a_one_line_error(tmp_path: Path, saved: bytes) -> None:
    """`similar --hybrid` ended in a traceback (AttributeError: 'list' object has no attribute 'items', or a
    UnicodeDecodeError) when the saved weights file held weights that are not an object or was saved as Latin-1."""
    from mess.cli.main import app as mess

    store = tagged_store(tmp_path, {f"{a}{i}": {"artist": [a]} for a in ("Alpha", "Beta", "Gamma") for i in (0, 1)})
    (store / "reports").mkdir(exist_ok=True)
    (store / "reports" / "artists_hybrid.json").write_bytes(saved)
    out = CliRunner().invoke(mess, ["artists", "similar", "alpha", "-l", "mfcc", "--hybrid", "--store", str(store)])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.output
    assert "malformed weights file" in out.stderr and "Traceback" not in out.output, out.stderr
