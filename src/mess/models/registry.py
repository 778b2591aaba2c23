"""Model names -> factories that load them.

A factory takes the torch device ("cpu", "cuda") and returns a loaded :class:`~mess.models.base.EmbeddingModel`.
Third-party backends add names through the ``mess.models`` entry point group, e.g. in their
``pyproject.toml``: ``[project.entry-points."mess.models"] my-model = "my_package:load"``
(``load(device: str) -> EmbeddingModel``). Built-in names cannot be overridden.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # mess.models.base imports numpy: `mess --help` lists the model names without it
    from mess.models.base import EmbeddingModel, ModelInfo

ModelFactory = Callable[[str], "EmbeddingModel"]
ENTRY_POINT_GROUP = "mess.models"
DEVICES = "cpu, cuda, cuda:N or mps"  # the torch devices the models run on (ONNX Runtime: cpu, cuda, cuda:N)
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
T = TypeVar("T")
Described = tuple["ModelInfo", bool]  # a model's info, and whether its forward runs on torch on the device asked


class ModelError(Exception):
    """A model that cannot be loaded; the message says what to do."""


class UnknownModel(ModelError):
    """A name that is no registry model, plugin, local model folder or ``.onnx`` file."""


def _dsp(device: str) -> EmbeddingModel:
    from mess.models.dsp import DspModel

    return DspModel()


def _musicnn(dataset: str, arch: str = "musicnn") -> ModelFactory:
    def load(device: str) -> EmbeddingModel:
        from mess.models.musicnn import MusicnnModel

        return MusicnnModel(dataset=dataset, device=device, arch=arch)

    return load


def _musicnn_pair(device: str) -> EmbeddingModel:
    from mess.models.musicnn.ensemble import MusicnnEnsemble

    return MusicnnEnsemble(device=device)


def _mert(key: str) -> ModelFactory:
    def load(device: str) -> EmbeddingModel:
        def read(repo: str, revision: str, offline_only: bool) -> EmbeddingModel:
            from mess.models.mert import MertModel  # torch and transformers: only once the checkpoint can be had

            return MertModel.from_pretrained(repo, revision=revision, name=key, device=device,
                                             local_files_only=offline_only)

        return _from_hub(key, read)

    return load


def _from_hub(key: str, read: Callable[[str, str, bool], T]) -> T:
    """``read(repo, revision, local_files_only)`` of MERT checkpoint ``key``, from the hub cache alone where the hub
    cannot be reached; ModelError (one line, what to do) where it cannot be had."""
    from mess.models.checkpoints import CHECKPOINTS
    from mess.models.hub import hub_cached, hub_unreachable, offline, quiet

    ckpt = CHECKPOINTS[key]
    advice = f"without network, run `mess models fetch {key} DIR` elsewhere and pass DIR as --model"
    unreachable = hub_unreachable()  # found at once, not after the hub client's half minute of retries
    if unreachable and not hub_cached(ckpt.repo, ckpt.revision):
        raise ModelError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} from the Hugging Face hub ({unreachable}); "
                         f"{advice}")
    try:
        with quiet("huggingface_hub"), offline(unreachable is not None):
            return read(ckpt.repo, ckpt.revision, unreachable is not None)
    except OSError as exc:
        raise ModelError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} from the Hugging Face hub "
                         f"({' '.join(str(exc).split())}); {advice}") from exc
    except ValueError as exc:  # files in the hub cache, but damaged: a traceback where a ModelError was caught
        raise ModelError(f"cannot load {ckpt.repo}@{ckpt.revision[:8]} from the Hugging Face hub cache "
                         f"({' '.join(str(exc).split())[:300]}); delete it there, or {advice}") from exc


FACTORIES: dict[str, ModelFactory] = {
    "dsp": _dsp,
    "musicnn": _musicnn_pair,
    "musicnn-msd": _musicnn("MSD"),
    "musicnn-mtt": _musicnn("MTT"),
    "musicnn-vgg-msd": _musicnn("MSD", "vgg"),
    "musicnn-vgg-mtt": _musicnn("MTT", "vgg"),
    "mert-v1-95m": _mert("mert-v1-95m"),
    "mert-v1-330m": _mert("mert-v1-330m"),
}
MODEL_NAMES = tuple(FACTORIES)


def _dsp_info(device: str) -> Described:
    from mess.models.dsp import DspModel

    return DspModel().info, False


def _musicnn_info(dataset: str, arch: str = "musicnn") -> Callable[[str], Described]:
    def info(device: str) -> Described:  # ONNX Runtime on a CPU, torch elsewhere (MusicnnModel.runs_on_torch)
        from mess.models.musicnn.model import musicnn_info

        return musicnn_info(dataset, arch), not device.startswith("cpu")

    return info


def _ensemble_info(device: str) -> Described:
    from mess.models.musicnn.ensemble import ensemble_info

    return ensemble_info(), not device.startswith("cpu")


def _mert_info(key: str) -> Callable[[str], Described]:
    def info(device: str) -> Described:
        from mess.models.mert_config import read_mert_info

        return _from_hub(key, lambda repo, revision, offline: read_mert_info(repo, revision, key, offline)), True

    return info


INFOS: dict[str, Callable[[str], Described]] = {  # as FACTORIES, the info alone: no weights read, no torch imported
    "dsp": _dsp_info,
    "musicnn": _ensemble_info,
    "musicnn-msd": _musicnn_info("MSD"),
    "musicnn-mtt": _musicnn_info("MTT"),
    "musicnn-vgg-msd": _musicnn_info("MSD", "vgg"),
    "musicnn-vgg-mtt": _musicnn_info("MTT", "vgg"),
    "mert-v1-95m": _mert_info("mert-v1-95m"),
    "mert-v1-330m": _mert_info("mert-v1-330m"),
}


def model_factories() -> dict[str, ModelFactory]:
    """The built-in factories, then those of installed plugins (``mess.models`` entry points), by name."""
    plugins = {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name.lower() not in FACTORIES}
    return {**FACTORIES, **{name: _plugin(ep) for name, ep in plugins.items()}}


def _plugin(ep: EntryPoint) -> ModelFactory:
    def load(device: str) -> EmbeddingModel:
        try:
            factory = ep.load()
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"cannot load model plugin {ep.name!r} ({ep.value}): {exc}") from exc
        except Exception as exc:  # its module fails as it is imported (a SyntaxError, its own checks): a traceback
            raise ModelError(f"cannot load model plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
        return factory(device)

    return load


def check_device(device: str) -> None:
    """Raise a :class:`ModelError` naming the devices when ``device`` is none of them (the dsp model, which runs
    on no device, took ``tpu`` without a word)."""
    if not _DEVICE.fullmatch(device):
        raise ModelError(f"unknown device {device!r}; use {DEVICES}")


def load_model(name: str, device: str = "cpu", preset: str | None = None) -> EmbeddingModel:
    """Load a model by registry name, an Essentia-style ``.onnx`` file (``preset`` names its front end; detected
    when None; refused when its stem is a registry model's name), or a MERT-shaped HubertModel from a local folder,
    on ``device`` (see :func:`check_device`)."""
    check_device(device)
    key = name.lower()
    if key.endswith(".onnx"):
        stem = Path(name).stem
        if stem.lower() in model_factories():  # the run, named after the file, would pass for that model's
            raise ModelError(f"{Path(name).name}: a run is named after its model file, and {stem} is a registry "
                             f"model's name, so its vectors would pass for that model's; rename the file (say, "
                             f"my-{stem}.onnx, with its .json) and run again")
        from mess.models.essentia import OnnxModel

        return OnnxModel(Path(name), preset=preset, device=device)
    if preset is not None:
        raise ModelError(f"--preset applies to .onnx model files, not to {name!r}")
    factories = model_factories()
    if key in factories:
        return factories[key](device)
    if name.strip() and Path(name).expanduser().is_dir():  # by its folder: queries by file load it again, offline
        from mess.models.mert import MertModel

        folder = str(Path(name).expanduser().resolve())
        if not (Path(folder) / "config.json").is_file():
            graphs = sorted(Path(folder).glob("*.onnx"))  # `mess models fetch vggish DIR` fills such a folder
            if graphs:
                raise ModelError(f"{folder} holds no MERT checkpoint (no config.json) but an ONNX model: pass the "
                                 f"file, --model {graphs[0]}")
            raise ModelError(f"{folder} holds no model (no config.json); name a registry model, a folder "
                             "saved by `mess models fetch` or save_pretrained, or a .onnx file")
        try:
            return MertModel.from_pretrained(folder, name=folder, device=device)
        except (OSError, ValueError, TypeError) as exc:  # its files, not mess: a traceback said nothing more
            raise _not_mert(folder, exc) from exc
    if name.strip() and (link := Path(name).expanduser()).is_symlink():  # not a folder: a link to nothing
        raise UnknownModel(f"model {name!r} is a link to {os.readlink(link)}, which does not exist")
    raise UnknownModel(f"unknown model {name!r}; choose one of {', '.join(factories)}, a local model folder "
                     "or a .onnx file")


def model_info(name: str, device: str = "cpu") -> Described | None:
    """What :func:`load_model` would load for ``name`` on ``device`` says of itself, read without its weights (nor
    torch): its info, and whether its forward runs on torch there. For a registry model or a MERT-shaped model
    folder; None for an ``.onnx`` file (its layers' sizes are found by running its graph), a plugin's model or a name
    that is none of those (:func:`load_model` says why)."""
    check_device(device)
    if name.lower() in INFOS:
        return INFOS[name.lower()](device)
    folder = Path(name).expanduser()
    if not name.strip() or name.lower().endswith(".onnx") or name.lower() in model_factories() \
            or not (folder / "config.json").is_file():  # a plugin's name is the plugin's, as in load_model
        return None
    from mess.models.mert_config import read_mert_info

    source = str(folder.resolve())
    try:
        return read_mert_info(source, None, source), True
    except (OSError, ValueError, TypeError) as exc:
        raise _not_mert(source, exc) from exc


def _not_mert(folder: str, exc: Exception) -> ModelError:
    """The error of a folder that does not load as a MERT-shaped model (its files', not mess's)."""
    why = " ".join(str(exc).split()) or type(exc).__name__
    return ModelError(f"cannot load {folder} as a MERT-shaped model: {why[:300]}")


def load_run_model(name: str, revision: str, source: Mapping[str, str] | None = None,
                   device: str = "cpu") -> EmbeddingModel:
    """The model a run's vectors were made with, to embed new files as its tracks were: the one path for
    `mess similar FILE` and the server's uploads.

    A run with ``source``, its record of the model file it was extracted with (an ``.onnx`` run, named after the
    file's stem; see ``EmbeddingModel.source``), loads from that record alone, once the file is checked against
    ``revision``: never a registry model, plugin or folder (in the working directory) of the same name. Other runs
    load by ``name`` as :func:`load_model` does, except one made from a model file whose place the store does not
    record (extracted before it was recorded). Raises :class:`ModelError` (one line) when the model cannot be had or
    is not ``revision`` (re-extract).
    """
    from mess.models.base import FILE_REVISION

    if source is not None:
        return _load_recorded(name, revision, source, device)
    if revision.startswith(FILE_REVISION):
        unrecorded = f"{name} was extracted with a model file ({name}.onnx) before mess recorded where such files are"
        if name.lower() in model_factories():
            raise ModelError(f"{unrecorded}, and {name} is a registry model's name: rename the file (say, "
                             f"my-{name}.onnx, with its .json) and run `mess extract` with it, for a run of its own "
                             "that can embed new files")
        raise ModelError(f"{unrecorded}; to embed new files with it, run `mess extract` with that file once more, "
                         "with the options the run was made with (--preset, --window, --max-windows; `mess info` "
                         "lists its windows)")
    gone = Path(name).is_absolute() and not Path(name).is_dir()  # a folder's run is named by its path: "unknown model"
    if gone and "+random-init" not in revision:  # a probe control's twin was never a folder
        kind, new = ("file", "NEWFILE") if Path(name).suffix.lower() == ".onnx" else ("folder", "NEWDIR")
        raise ModelError(f"{name} is the model {kind} the collection was extracted with, and it is gone; the model "
                         f"is needed to embed new files: put the {kind} back, or extract the collection with it at "
                         f"its new place (`mess extract DIR --model {new}`, a new run)")
    model = load_model(name, device=device)
    if model.info.revision != revision:
        raise ModelError(f"{name} is now revision {model.info.revision} but the store holds {revision}; "
                         "re-extract the collection to compare with new files")
    return model


def _load_recorded(name: str, revision: str, source: Mapping[str, str], device: str) -> EmbeddingModel:
    """The ``.onnx`` model a run's record names, when the file there is still the one the run was extracted with."""
    path, preset = source.get("path"), source.get("preset")
    if (source.get("kind") != "onnx" or not path or not Path(path).is_absolute() or not preset
            or source.get("revision") != revision):
        raise ModelError(f"the store's record of the model file {name} was extracted with is damaged or is not this "
                         "run's; run `mess extract` with the model file again to record it anew")
    from mess.models.essentia import EssentiaModelError, OnnxModel
    from mess.models.essentia.fetch import file_revision

    file = Path(path)
    try:
        now = file_revision(file)
    except FileNotFoundError:
        raise ModelError(f"{name} was extracted with the model file {path}, which is gone; the model file is needed "
                         "to embed new files: put it back, or run `mess extract` with it at its new place") from None
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path} that {name} was extracted with "
                         f"({exc.strerror or exc})") from None
    if now != revision.partition("+")[0]:  # the file's hash, then the preset where it is not the file's own
        raise ModelError(f"the model file {path} has changed since the collection was extracted with it (now {now}, "
                         f"the store holds {revision}); re-extract the collection to compare with new files")
    try:
        model = OnnxModel(file, preset=preset, device=device)
    except EssentiaModelError as exc:
        raise ModelError(str(exc)) from exc
    if model.info.revision != revision:  # its .json now implies another preset
        raise ModelError(f"the model file {path} with preset {preset} is now revision {model.info.revision}, the store "
                         f"holds {revision} (was its .json changed?); re-extract the collection to compare with new "
                         "files")
    return model
