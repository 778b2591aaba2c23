"""Real, labelled audio offline: music21 corpus pieces rendered with fluidsynth.

Each render is a FLAC tagged artist = composer = the corpus folder (title-cased),
album = the work, genre = classical, with the MIDI it was rendered from beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import mutagen.flac
import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from music21 import midi as m21midi
    from music21.stream import Score
    from rich.console import Console

log = logging.getLogger(__name__)

SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
INSTALL_HINT = "apt-get install fluidsynth timgm6mb-soundfont"
DEFAULT_COMPOSERS = ("bach", "palestrina", "monteverdi", "mozart", "haydn", "josquin")
FORMAT_PREFERENCE = ("mxl", "musicxml", "xml", "krn", "abc")  # one file per piece when a work comes in several
PERCUSSION_CHANNEL = 10
SYNTH_FAILURES_IN_A_ROW = 3  # a collection stops when fluidsynth fails (or hangs) on this many pieces in a row
DEFAULT_BPM = 120.0  # music21 writes this tempo when a score has no metronome mark
Factor = Literal["instrument", "tempo", "transpose", "velocity"]
FACTOR_LEVELS: dict[str, tuple[float, ...]] = {
    "instrument": (0, 40, 73, 56, 19),  # GM piano, violin, flute, trumpet, organ
    "tempo": (0.6, 0.8, 1.0, 1.25, 1.6),
    "transpose": (-6, -3, 0, 3, 6),
    "velocity": (30, 55, 80, 105, 127),
}


class RenderError(Exception):
    """A piece that could not be rendered (missing synth, parse failure, time-out, silence)."""


class SynthError(RenderError):
    """fluidsynth itself failed or ran past its time-out on a piece."""


@dataclass(frozen=True)
class CorpusPiece:
    """A piece of music21's corpus, labelled by the composer folder it lives in."""

    corpus_path: str  # relative to the corpus root, e.g. "mozart/k155/movement1.mxl"
    composer: str  # the folder, title-cased: "Mozart"
    work: str  # "k155"; a single-file work is its own work: "bwv1.6"
    title: str  # "k155 movement1"

    @property
    def slug(self) -> str:
        """A file name unique across the corpus: "mozart__k155__movement1"."""
        return self.corpus_path.rsplit(".", 1)[0].replace("/", "__")


@dataclass(frozen=True)
class RenderSettings:
    """Everything that may vary between two renders of one piece.

    ``tempo_scale`` > 1 plays faster; ``transpose`` is in semitones; ``program`` is a
    General MIDI program (0-127) forced on every part; ``velocity`` is forced on every note;
    ``peak`` scales the render to that peak level (None keeps fluidsynth's level).
    """

    program: int | None = None
    tempo_scale: float = 1.0
    transpose: int = 0
    velocity: int | None = None
    max_seconds: float = 60.0
    max_measures: int | None = None
    sample_rate: int = 22050
    timeout_s: float = 60.0
    peak: float | None = 0.5


@dataclass(frozen=True)
class RenderedVariant:
    """One render of a factor set: which piece, which factor, which value."""

    path: Path
    piece: CorpusPiece
    factor: str
    value: float


def find_soundfont() -> Path:
    """TimGM6mb first, then any other soundfont Debian installed."""
    preferred = SOUNDFONT_DIR / "TimGM6mb.sf2"
    if preferred.is_file():
        return preferred
    found = sorted(p for p in SOUNDFONT_DIR.glob("*.sf2") if p.is_file())
    if not found:
        raise RenderError(f"no soundfont in {SOUNDFONT_DIR}: {INSTALL_HINT}")
    return found[0]


def require_synth() -> Path:
    """The soundfont to render with; RenderError when fluidsynth or a soundfont is missing."""
    if shutil.which("fluidsynth") is None:
        raise RenderError(f"fluidsynth is not installed: {INSTALL_HINT}")
    return find_soundfont()


def list_corpus(composers: Sequence[str] | None = None, limit_per_composer: int | None = 4) -> list[CorpusPiece]:
    """The first pieces of each composer folder (default: ``DEFAULT_COMPOSERS``), in path order.

    Roman-numeral analyses (.rntxt) are skipped and a piece stored in several formats
    is listed once. ``limit_per_composer=None`` lists them all.
    """
    from music21 import corpus

    pieces: list[CorpusPiece] = []
    for composer in composers or DEFAULT_COMPOSERS:
        by_stem: dict[str, str] = {}
        for path in corpus.getComposer(composer):
            rel = PurePosixPath(path).as_posix().split("/corpus/", 1)[-1]
            stem, ext = rel.rsplit(".", 1)
            if ext in FORMAT_PREFERENCE and (stem not in by_stem or _rank(rel) < _rank(by_stem[stem])):
                by_stem[stem] = rel
        if not by_stem:
            raise RenderError(f"music21's corpus has no pieces by {composer!r}")
        chosen = sorted(by_stem.values())[:limit_per_composer]
        pieces += [_piece(rel) for rel in chosen]
    return pieces


def render_piece(piece: CorpusPiece, out_dir: Path, *, program: int | None = None, tempo_scale: float = 1.0,
                 transpose: int = 0, velocity: int | None = None, max_seconds: float = 60.0,
                 max_measures: int | None = None, sample_rate: int = 22050, timeout_s: float = 60.0,
                 peak: float | None = 0.5, name: str | None = None) -> Path:
    """Render one piece to a tagged FLAC (its .mid beside it): ``out_dir/<name or slug>.flac``.

    An existing output is returned as is.
    Raises RenderError when music21, fluidsynth or the time-out get in the way.
    """
    settings = RenderSettings(program, tempo_scale, transpose, velocity, max_seconds, max_measures,
                              sample_rate, timeout_s, peak)
    return _render(piece, out_dir / f"{name or piece.slug}.flac", settings)


def render_collection(out_dir: Path, composers: Sequence[str] | None = None, per_composer: int = 4, *,
                      workers: int = 2, settings: RenderSettings = RenderSettings(),
                      console: Console | None = None) -> list[Path]:
    """Render ``per_composer`` pieces per composer, replacing a piece that fails by the next one.

    Already rendered files are reused. Skipped pieces are logged as warnings. Returns the
    files by composer, then corpus order. Raises RenderError up front without fluidsynth, and once
    fluidsynth has failed or hung on :data:`SYNTH_FAILURES_IN_A_ROW` pieces in a row (the files
    rendered so far are kept).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    require_synth()
    names = tuple(composers or DEFAULT_COMPOSERS)
    candidates = {c: iter(list_corpus([c], None)) for c in names}
    done: dict[str, list[tuple[CorpusPiece, Path]]] = {c: [] for c in names}
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with ThreadPoolExecutor(max_workers=workers) as pool, Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(names) * per_composer)
        running: dict[Future[Path], tuple[str, CorpusPiece]] = {}
        synth_failures = 0

        def submit(composer: str) -> None:
            piece = next(candidates[composer], None)
            if piece is not None:
                running[pool.submit(_render, piece, out_dir / f"{piece.slug}.flac", settings)] = (composer, piece)

        for composer in names:
            for _ in range(per_composer):
                submit(composer)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                composer, piece = running.pop(future)
                try:
                    done[composer].append((piece, future.result()))
                    progress.update(task, advance=1, description=piece.corpus_path)
                    synth_failures = 0
                except SynthError as exc:
                    synth_failures += 1
                    if synth_failures >= SYNTH_FAILURES_IN_A_ROW:
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise RenderError(f"fluidsynth failed on {synth_failures} pieces in a row, so it stops "
                                          f"here (the last: {exc}); check fluidsynth and its soundfont") from exc
                    log.warning("skipped %s", exc)
                    submit(composer)
                except RenderError as exc:
                    log.warning("skipped %s", exc)
                    submit(composer)
    return [path for c in names for _, path in sorted(done[c], key=lambda pair: pair[0].corpus_path)]


def render_factor_set(out_dir: Path, factor: Factor, n_pieces: int = 4, levels: Sequence[float] | None = None,
                      settings: RenderSettings = RenderSettings(max_seconds=30.0, max_measures=4)
                      ) -> list[RenderedVariant]:
    """The first ``n_pieces`` Bach chorales rendered at every level of ``factor``, nothing else varied.

    Outside the instrument factor every render is a piano (GM 0) unless ``settings`` names a
    program. Levels are never normalised, so velocity stays audible. Files go to
    ``out_dir/<factor>/``, each with a JSON sidecar of piece, factor, value and settings.
    """
    values = tuple(levels if levels is not None else FACTOR_LEVELS[factor])
    base = replace(settings, peak=None)
    if factor != "instrument" and base.program is None:
        base = replace(base, program=0)
    variants = []
    for piece in list_corpus(["bach"], n_pieces):
        for value in values:
            varied = _vary(base, factor, value)
            path = _render(piece, out_dir / factor / f"{piece.slug}__{factor}_{value:g}.flac", varied)
            sidecar = {"piece": piece.corpus_path, "factor": factor, "value": value, "settings": asdict(varied)}
            path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
            variants.append(RenderedVariant(path, piece, factor, float(value)))
    return variants


def _vary(settings: RenderSettings, factor: Factor, value: float) -> RenderSettings:
    if factor == "instrument":
        return replace(settings, program=int(value))
    if factor == "tempo":
        return replace(settings, tempo_scale=float(value))
    if factor == "transpose":
        return replace(settings, transpose=int(value))
    return replace(settings, velocity=int(value))


def _rank(rel: str) -> int:
    return FORMAT_PREFERENCE.index(rel.rsplit(".", 1)[1])


def _piece(rel: str) -> CorpusPiece:
    parts = rel.rsplit(".", 1)[0].split("/")
    folder, inner = parts[0], parts[1:]
    return CorpusPiece(rel, folder.replace("_", " ").title(), inner[0], " ".join(inner))


def _render(piece: CorpusPiece, flac: Path, settings: RenderSettings) -> Path:
    if flac.exists():
        return flac
    soundfont = require_synth()
    flac.parent.mkdir(parents=True, exist_ok=True)
    midi_path = flac.with_suffix(".mid")
    _write_midi(piece, settings, midi_path)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["timeout", "-k", "5", f"{settings.timeout_s:g}", "fluidsynth", "-ni", "-q",
               "-r", str(settings.sample_rate), "-F", str(wav), str(soundfont), str(midi_path)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode in (124, 137):  # timed out: terminated, or killed 5 s later
            raise SynthError(f"{piece.corpus_path}: fluidsynth ran past {settings.timeout_s:g} s")
        if result.returncode != 0 or not wav.exists():
            raise SynthError(f"{piece.corpus_path}: fluidsynth failed ({result.stderr.strip()[-200:]})")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[: int(settings.max_seconds * sr)]
    top = float(np.abs(audio).max()) if audio.size else 0.0
    if top < 1e-4:
        raise RenderError(f"{piece.corpus_path}: rendered silence")
    if settings.peak is not None:
        audio *= settings.peak / top
    partial = flac.with_name(f".{flac.name}.partial")  # a killed render never leaves a file that looks done
    sf.write(partial, audio, sr, format="FLAC")
    _tag(partial, piece)
    partial.replace(flac)
    return flac


def _write_midi(piece: CorpusPiece, settings: RenderSettings, path: Path) -> None:
    """music21 -> MIDI of the excerpt, with the settings applied and every channel silenced at the end."""
    mf = _to_midi(piece, settings)
    mf.ticksPerQuarterNote = round(mf.ticksPerQuarterNote * settings.tempo_scale)
    if not 0 < mf.ticksPerQuarterNote < 1 << 15:
        raise RenderError(f"tempo_scale {settings.tempo_scale} is out of range")
    for track in mf.tracks:
        _apply_settings(track, settings)
    mf.open(str(path), "wb")
    try:
        mf.write()
    finally:
        mf.close()


def _to_midi(piece: CorpusPiece, settings: RenderSettings) -> m21midi.MidiFile:
    """Parse the piece and translate its excerpt; any music21 failure becomes a RenderError."""
    from music21 import bar, corpus, midi, repeat

    try:
        try:
            score = corpus.parse(piece.corpus_path)
        except zlib.error:  # a truncated pickle in music21's shared parse cache (a killed parse): bypass it
            score = corpus.parse(piece.corpus_path, forceSource=True)
        if hasattr(score, "scores"):  # an Opus (abc collections): its first score
            score = score.scores[0]
        score = _drop_grace_notes(_excerpt(score, settings))
        try:
            return midi.translate.music21ObjectToMidiFile(score)
        except repeat.ExpanderException:  # badly formed (or excerpt-cut) repeats: play it through once
            for barline in list(score.recurse().getElementsByClass(bar.Repeat)):
                barline.activeSite.remove(barline)
            return midi.translate.music21ObjectToMidiFile(score)
    except Exception as exc:  # music21's parsers and translators raise many unrelated exception types
        raise RenderError(f"{piece.corpus_path}: music21 cannot turn it into MIDI ({exc})") from exc


def _excerpt(score: Score, settings: RenderSettings) -> Score:
    """The leading measures that cover ``max_seconds`` (with margin) and ``max_measures``.

    Translating a whole quartet movement to MIDI takes music21 minutes; the excerpt, seconds.
    """
    from music21 import tempo
    from music21.stream import Measure

    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass(Measure))
    if not measures:
        return score
    bpms = [m.getQuarterBPM() for m in score.recurse().getElementsByClass(tempo.MetronomeMark)]
    bpm = max([b for b in bpms if b] or [DEFAULT_BPM])
    budget = 1.5 * settings.max_seconds * settings.tempo_scale * bpm / 60  # quarter notes
    keep = [m for m in measures if m.offset < budget][: settings.max_measures]
    if len(keep) == len(measures):
        return score
    return score.measures(keep[0].number, keep[-1].number)


def _drop_grace_notes(score: Score) -> Score:
    """Remove grace notes: music21 writes their note-off before their note-on, leaving them on forever."""
    for note in [n for n in score.recurse().notes if n.duration.isGrace]:
        note.activeSite.remove(note)
    return score


def _apply_settings(track: m21midi.MidiTrack, settings: RenderSettings) -> None:
    """Force program, velocity and transposition; append CC123 + CC120 on every channel.

    The closing all-notes-off / all-sound-off ends any note music21's export left on
    (grace notes did, in several quartet movements): fluidsynth renders until every
    voice is silent, so one sustained note made it run forever.
    """
    from music21 import midi

    voice = midi.ChannelVoiceMessages
    channels: set[int] = set()
    for event in _channel_events(track):
        channels.add(event.channel)
        tonal = event.channel != PERCUSSION_CHANNEL
        if event.type in (voice.NOTE_ON, voice.NOTE_OFF) and tonal and event.pitch is not None:
            event.pitch = min(127, max(0, event.pitch + settings.transpose))
        if event.type == voice.NOTE_ON and event.velocity and settings.velocity is not None:
            event.velocity = settings.velocity
        if event.type == voice.PROGRAM_CHANGE and tonal and settings.program is not None:
            event.data = settings.program
    tonal_channels = sorted(channels - {PERCUSSION_CHANNEL})
    if settings.program is not None:
        opening = [_event(track, voice.PROGRAM_CHANGE, ch, data=settings.program) for ch in tonal_channels]
        track.events[0:0] = [e for pair in opening for e in pair]
    closing = [_event(track, voice.CONTROLLER_CHANGE, ch, controller=cc)
               for ch in sorted(channels) for cc in (123, 120)]
    end = len(track.events)
    if end and track.events[-1].type == midi.MetaEvents.END_OF_TRACK:
        end -= 2 if end >= 2 and track.events[-2].isDeltaTime() else 1
    track.events[end:end] = [e for pair in closing for e in pair]
    track.updateEvents()


def _channel_events(track: m21midi.MidiTrack) -> Iterator[m21midi.MidiEvent]:
    from music21 import midi

    for event in track.events:
        if not event.isDeltaTime() and event.type in midi.ChannelVoiceMessages:
            yield event


def _event(track: m21midi.MidiTrack, kind: m21midi.ChannelVoiceMessages, channel: int, *,
           data: int | None = None, controller: int | None = None) -> tuple[m21midi.DeltaTime, m21midi.MidiEvent]:
    """A (zero delta time, channel event) pair, as music21 tracks store them."""
    from music21 import midi

    event = midi.MidiEvent(track, type=kind, channel=channel)
    if controller is None:
        event.data = data
    else:
        event.parameter1, event.parameter2 = controller, 0
    return midi.DeltaTime(track, time=0, channel=channel), event


def _tag(path: Path, piece: CorpusPiece) -> None:
    tags = mutagen.flac.FLAC(path)
    tags.update({"artist": piece.composer, "composer": piece.composer, "album": piece.work,
                 "title": piece.title, "genre": "classical", "comment": f"music21 corpus {piece.corpus_path}"})
    tags.save()
