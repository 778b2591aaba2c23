"""Per-store settings and the choice of a run, in process: the file as JSON reads it, the documented model order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mess.store.config import (
    CONFIG_FILE,
    MODEL_PREFERENCE,
    ConfigError,
    model_key,
    preferred_model,
    read_config,
    run_choice,
    write_setting,
)


def test_settings_are_written_as_json_read_back_and_a_damaged_file_is_named_and_repaired(tmp_path: Path) -> None:
    assert read_config(tmp_path) == {}  # no file: no settings
    assert write_setting(tmp_path, "default-model", "dsp") == {"default-model": "dsp"}
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {"default-model": "dsp"}
    assert read_config(tmp_path) == {"default-model": "dsp"}
    assert write_setting(tmp_path, "default-model", None) == {}
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {}
    assert write_setting(tmp_path, "default-model", None) == {}  # unsetting what is not set is no error
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        write_setting(tmp_path, "colour", "red")
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {}  # an unknown setting writes nothing
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"default-model": "musicnn", "gone": None, "n": 3}))
    assert read_config(tmp_path) == {"default-model": "musicnn", "n": "3"}  # a null is no setting
    for damaged in ("{not json", json.dumps(["default-model", "dsp"])):
        (tmp_path / CONFIG_FILE).write_text(damaged)
        with pytest.raises(ConfigError, match=f"cannot read {tmp_path / CONFIG_FILE}.*--unset"):
            read_config(tmp_path)
        assert write_setting(tmp_path, "default-model", "dsp") == {"default-model": "dsp"}  # setting repairs it
        assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {"default-model": "dsp"}
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / CONFIG_FILE).mkdir()
    assert read_config(tmp_path / "folder") == {}  # a folder named config.json is no settings file


def test_the_default_model_is_a_model_folder_then_the_documented_order_then_others_and_controls_last() -> None:
    # the order the module documents: a local model folder, MERT, musicnn, dsp, any other model, probe controls
    order = ["/models/MERT-v1-95M", *MODEL_PREFERENCE, "clap", "musicnn-msd-random-init"]
    for better, worse in zip(order, order[1:], strict=False):
        assert preferred_model([better, worse]) == better, (better, worse)
        assert preferred_model([worse, better]) == better, (better, worse)
    assert preferred_model(["clap", "other"]) == "other"  # among equals, the latest extracted
    assert preferred_model(["other", "clap"]) == "clap"
    assert preferred_model(["a-random-init", "b-random-init"]) == "b-random-init"  # only controls: the latest
    assert preferred_model(["/m/x-random-init", "dsp"]) == "dsp"  # a control in a folder is still a control
    assert preferred_model([]) is None
    assert preferred_model([], configured="dsp") is None
    assert preferred_model(["dsp", "musicnn"], configured="dsp") == "dsp"
    assert preferred_model(["dsp", "musicnn"], configured="") == "musicnn"  # set to nothing: no choice made
    with pytest.raises(ConfigError, match=r"default-model 'gone'.*\(extracted: dsp, musicnn\)"):
        preferred_model(["musicnn", "dsp", "dsp"], configured="gone")


def test_a_run_is_chosen_as_name_at_id_or_run_colon_id_and_anything_else_malformed_is_refused(tmp_path: Path) -> None:
    assert run_choice("dsp@2") == ("dsp", 2)
    assert run_choice("run:7") == (None, 7)
    assert run_choice("a@b@12") == ("a@b", 12)  # the id is after the last @
    assert run_choice("dsp") is None  # a model name
    assert run_choice("DSP@3", known={"dsp"}) == ("dsp", 3)  # names are read in any case
    assert run_choice("x@2", known={"x@2"}) is None  # an extracted model named like a choice is that model
    assert run_choice("dsp@" + "9" * 19) == ("dsp", int("9" * 19))  # SQLite's largest ids have 19 digits
    for bad in ("dsp@", "@2", "dsp@x", "run:", "run:-1", "dsp@" + "1" * 20, "dsp@\u0663", "dsp@2.0"):
        with pytest.raises(ConfigError, match="is no run choice"):
            run_choice(bad)
    folder = tmp_path / "m@1"
    folder.mkdir()
    assert run_choice(f"{folder}@4") == (str(folder.resolve()), 4)  # a model folder's run: its resolved path


def test_a_model_name_is_a_known_name_in_any_case_else_a_model_folder_else_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dsp").mkdir()
    (tmp_path / "MERT").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_key("dsp", {"dsp"}) == "dsp"  # a folder called dsp does not hide the store's dsp run
    assert model_key("DSP", {"dsp"}) == "dsp"
    assert model_key("MERT", {"mert"}) == "mert"
    assert model_key("MERT") == str((tmp_path / "MERT").resolve())  # not extracted: the folder
    assert model_key("./MERT", {"mert"}) == str((tmp_path / "MERT").resolve())  # a path is never lowered
    assert model_key("unknown") == "unknown"
    assert model_key("x" * 5000) == "x" * 5000  # too long for a path: a name


def test_a_known_model_folder_is_its_run_though_its_path_is_now_a_link(tmp_path: Path) -> None:
    """A model folder's run is named by the path it was extracted from; that path later made a link to another
    folder (models reorganised) still names that run, not the link's target."""
    (tmp_path / "moved").mkdir()
    link = tmp_path / "MERT"
    link.symlink_to(tmp_path / "moved")
    assert model_key(str(link), {str(link)}) == str(link)
    assert model_key(str(link)) == str(tmp_path / "moved")  # not extracted: the folder it leads to
