"""The decoder's public function for a file's channels (what the copies of a recording are made from), and no module
reaching into the decoder's private names for it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import soundfile as sf

import mess
from mess.audio import decode

PRIMED = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks")) / "wesnoth" / "battle-epic.ogg"


def test_a_files_channels_are_what_libsndfile_reads(tmp_path: Path) -> None:
    """``channel_blocks`` of an 8-bit stereo WAV and of a Vorbis file with priming stamped before 0: joined, the
    [samples, channels] libsndfile reads, at its rate."""
    wav = tmp_path / "u8.wav"
    sf.write(wav, np.sin(np.linspace(0, 200, 8000))[:, None] * [0.5, -0.25], 8000, subtype="PCM_U8")
    for path in [wav, PRIMED] if PRIMED.is_file() else [wav]:
        blocks = list(decode.channel_blocks(path))
        expected, rate = sf.read(path, dtype="float32", always_2d=True)
        assert {r for _, r in blocks} == {rate}, path
        joined = np.concatenate([b for b, _ in blocks])
        assert joined.shape == expected.shape and np.abs(joined - expected).max() < 1e-4, path


def test_no_module_imports_the_decoders_private_names() -> None:
    """Modules outside mess.audio.decode import none of its underscored names (``read_channels`` imported
    ``_pyav_blocks``)."""
    src = Path(mess.__file__).parent
    private = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mess.audio.decode":
                private += [f"{path.relative_to(src)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not private
