"""Typed-union config fields (``deform.field``, ``densify``): JSON with a type tag, CLI selection
and overrides, and run folders written before the union layout."""

from __future__ import annotations

import pytest

from gen4d.config import ConfigError, from_dict, load_config, parse_assignments, set_fields, to_dict
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, MCMCConfig
from gen4d.errors import UserError
from gen4d.io import write_json
from gen4d.recon.presets import PRESETS, ConstructConfig
from gen4d.recon.stag4d.config import PRESETS as STAG4D_PRESETS
from gen4d.recon.stag4d.config import Stag4DConfig


def old_layout(config: ConstructConfig, strategy: str = "default", mcmc: MCMCConfig | None = None) -> dict:
    """``config`` as gen4d stored it before the unions: ``deform.kind`` beside both field configs,
    ``strategy`` beside ``densify`` and ``mcmc`` (the unchosen ones at their class defaults)."""
    data = to_dict(config)
    field = data["deform"].pop("field")
    kind = field.pop("type")
    data["deform"] = {
        "kind": kind,
        "hexplane": field if kind == "hexplane" else to_dict(HexPlaneConfig()),
        "control_points": field if kind == "control_points" else to_dict(ControlPointConfig()),
        "rigidity": data["deform"]["rigidity"],
    }
    densify = data["densify"]
    densify.pop("type")
    data["strategy"] = strategy
    data["mcmc"] = to_dict(mcmc or MCMCConfig())
    return data


def test_union_fields_store_their_class_and_reload_to_it():
    config = set_fields(PRESETS["scgs"], {"densify": "mcmc"})
    data = to_dict(config)
    assert data["deform"]["field"]["type"] == "control_points"
    assert data["densify"] == {"type": "mcmc", **to_dict(MCMCConfig())}
    assert from_dict(ConstructConfig, data) == config
    for preset in STAG4D_PRESETS.values():
        assert from_dict(Stag4DConfig, to_dict(preset)) == preset
    data["deform"]["field"]["type"] = "grid"
    with pytest.raises(ConfigError, match=r"deform\.field: expected 'type' one of 'hexplane', 'control_points'"):
        from_dict(ConstructConfig, data)
    del data["deform"]["field"]["type"]
    with pytest.raises(ConfigError, match=r"deform\.field: .*got None"):
        from_dict(ConstructConfig, data)


def test_set_fields_chooses_a_class_then_sets_its_fields():
    base = PRESETS["default"]
    # any order: the class is chosen first, then from its defaults
    chosen = set_fields(base, {"deform.field.num_points": 64, "deform.field": "control_points"})
    assert chosen.deform.field == ControlPointConfig(num_points=64)
    assert chosen.deform.rigidity == base.deform.rigidity
    # choosing the class already chosen keeps the preset's settings of it
    kept = set_fields(base, {"deform.field": "hexplane", "deform.field.width": 16})
    assert kept.deform.field.resolution == base.deform.field.resolution and kept.deform.field.width == 16
    mcmc = set_fields(base, {"densify": "mcmc", "densify.cap": 1000, "densify.start": 5})
    assert mcmc.densify == MCMCConfig(cap=1000, start=5)
    assert set_fields(base, {"densify": MCMCConfig(cap=7)}).densify == MCMCConfig(cap=7)
    with pytest.raises(ConfigError, match=r"is a field of densify mcmc, but densify is 'adaptive'") as err:
        set_fields(base, {"densify.cap": 1000})
    assert err.value.field == "densify.cap"
    with pytest.raises(ValueError, match="unknown config field 'deform.field.bogus'"):
        set_fields(base, {"deform.field.bogus": 1})


def test_runs_of_the_older_layout_still_load(tmp_path):
    for name, preset in PRESETS.items():
        assert from_dict(ConstructConfig, old_layout(preset)) == preset, name
    old = old_layout(PRESETS["demo"], strategy="mcmc", mcmc=MCMCConfig(cap=123))
    path = write_json(tmp_path / "config.json", old)
    loaded = load_config(ConstructConfig, path)
    assert loaded.densify == MCMCConfig(cap=123) and loaded.deform == PRESETS["demo"].deform
    # Stag4DConfig holds the same DeformConfig
    stag = to_dict(STAG4D_PRESETS["fast"])
    field = stag["deform"].pop("field")
    stag["deform"].update(kind=field.pop("type"), hexplane=field, control_points=to_dict(ControlPointConfig()))
    assert from_dict(Stag4DConfig, stag) == STAG4D_PRESETS["fast"]


def test_configs_stored_before_the_learned_rigid_motion_load_as_they_ran():
    stored = to_dict(PRESETS["default"])
    assert from_dict(ConstructConfig, stored).rigid.when == "turn"  # today's default, stored in full
    del stored["rigid"]  # a config.json of an earlier version: it learned no whole-object motion
    assert from_dict(ConstructConfig, stored).rigid.when == "never"


def test_configs_stored_before_the_displacement_term_load_without_it():
    stored = to_dict(PRESETS["default"])
    assert from_dict(ConstructConfig, stored).loss.displacement == 1e-3  # today's default, stored in full
    del stored["loss"]["displacement"]  # an earlier config.json: its runs had no such term
    assert from_dict(ConstructConfig, stored).loss.displacement == 0.0


def test_resume_compares_an_older_stored_config_in_the_current_layout(tmp_path):
    from gen4d.run import check_resume_config

    config = PRESETS["scgs"]
    write_json(tmp_path / "config.json", old_layout(config))
    check_resume_config(tmp_path, config, ["output"])  # the same settings: accepted
    with pytest.raises(UserError, match=r"deform\.field\.num_points"):
        check_resume_config(tmp_path, set_fields(config, {"deform.field.num_points": 64}), ["output"])


def test_checkpoints_of_the_older_layout_load(tmp_path):
    from gen4d.gaussians import random_in_sphere
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.io import read_json

    deform = DeformConfig(field=ControlPointConfig(num_points=4, width=8, depth=1))
    DynamicGaussians(random_in_sphere(20, seed=0), deform).save(tmp_path)
    meta = read_json(tmp_path / "model.json")
    field = meta["deform"].pop("field")
    meta["deform"].update(kind=field.pop("type"), control_points=field, hexplane=to_dict(HexPlaneConfig()))
    write_json(tmp_path / "model.json", meta)
    assert DynamicGaussians.load(tmp_path).deform_config == deform


def test_cli_selects_a_class_and_sets_its_fields(tmp_path):
    from gen4d.cli import build_parser
    from gen4d.commands.reconstruct import resolve_config

    parser, _ = build_parser(["reconstruct"])
    argv = ["reconstruct", "data", "--out", str(tmp_path / "run"), "--preset", "default"]
    args = parser.parse_args(
        argv + ["--deform.field", "control_points", "--deform.field.neighbours", "4", "--densify", "mcmc",
                "--densify.cap", "5000", "--densify.every", "50"]
    )  # fmt: skip
    config = resolve_config(args)
    assert config.deform.field == ControlPointConfig(neighbours=4)
    assert config.densify == MCMCConfig(cap=5000, every=50)
    # a field both classes have (every): applies to the chosen one
    config = resolve_config(parser.parse_args(argv + ["--densify.every", "50"]))
    assert config.densify == DensifyConfig(**{**to_dict(PRESETS["default"].densify), "every": 50})
    help_text = parser._subparsers._group_actions[0].choices["reconstruct"].format_help()
    for text in ("--deform.field ", "'hexplane'", "'control_points'", "[control_points] Number of control points",
                 "--densify ", "'adaptive'", "'mcmc'", "[mcmc] Largest number of Gaussians"):  # fmt: skip
        assert text in help_text, text


def test_parse_assignments_feeds_set_fields():
    changes = parse_assignments(" densify=mcmc; densify.cap=5000;;turn.enabled=false ")
    assert changes == {"densify": "mcmc", "densify.cap": "5000", "turn.enabled": "false"}
    config = set_fields(PRESETS["default"], changes)
    assert config.densify == MCMCConfig(cap=5000) and config.turn.enabled is False
    assert parse_assignments("") == {}
    with pytest.raises(ValueError, match="expected key=value, got 'densify'"):
        parse_assignments("turn.enabled=false;densify")
    with pytest.raises(ValueError, match="got '=3'"):
        parse_assignments("=3")
