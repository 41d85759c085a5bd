"""Recipes: every built-in loads, validates, dumps and reloads unchanged; bad recipes are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.errors import RecipeError
from edgekit.recipe import builtin_recipes, dump_recipe, load_recipe, parse_recipe, with_calibration

from .conftest import assert_user_error, run_cli


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_builtin_recipe_round_trips(name: str, tmp_path: Path) -> None:
    recipe, _ = load_recipe(name)
    dumped = dump_recipe(recipe)
    (tmp_path / "r.yaml").write_text(dumped)
    again, _ = load_recipe(str(tmp_path / "r.yaml"))
    assert again == recipe
    assert dump_recipe(again) == dumped


def test_expected_builtins_exist() -> None:
    assert {"int8", "prune50", "distill", "prune50-kd-int8"} <= set(builtin_recipes())


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    return info.value.message


def test_misspelt_key_names_file_step_key_and_suggestion(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: quantize\n    methd: minmax\n")
    assert "bad.yaml" in msg and "step 1 (quantize)" in msg and "'methd'" in msg and "did you mean 'method'" in msg


def test_unknown_step_kind(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: quantise\n")
    assert "unknown step kind 'quantise'" in msg and "did you mean 'quantize'" in msg


def test_bad_value(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: quantize\n    method: magic\n")
    assert "step 1 (quantize): method" in msg


def test_out_of_range(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: prune\n    target_macs_ratio: 1.5\n")
    assert "target_macs_ratio" in msg


def test_quantize_must_be_last(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: quantize\n  - kind: finetune\n")
    assert "quantize must be the last step" in msg


def test_not_yaml(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps: [\n")
    assert "not valid YAML" in msg


def test_override_keys_are_checked(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "name: x\nsteps:\n  - kind: quantize\n    overrides:\n      conv1: {skp: true}\n")
    assert "'skp'" in msg and "did you mean 'skip'" in msg


def test_unknown_recipe_name_suggests() -> None:
    with pytest.raises(RecipeError, match="did you mean 'int8'"):
        load_recipe("int9")


def test_calib_override() -> None:
    recipe, _ = load_recipe("int8")
    assert with_calibration(recipe, "npz:x.npz").steps[0].calibration == "npz:x.npz"  # type: ignore[union-attr]


def test_print_recipe_shows_every_default(tmp_path: Path) -> None:
    res = run_cli("compress", "--recipe", "int8", "--print-recipe", cwd=tmp_path)
    assert res.code == 0, res.err
    step = yaml.safe_load(res.out)["steps"][0]
    for key in ("samples", "seed", "method", "percentile", "bias_correction", "entropy_bins", "profile"):
        assert key in step
    assert step["samples"] == 300


def test_cli_bad_recipe_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("name: r\nsteps:\n  - kind: prune\n    importanse: l1\n")
    assert_user_error(run_cli("compress", "--recipe", "r.yaml", "--print-recipe", cwd=tmp_path), "did you mean 'importance'")


def test_parse_rejects_non_mapping() -> None:
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe(["a"], "inline")


def test_one_registry_entry_per_step_kind() -> None:
    """Every step kind the recipe parses has one implementation entry, with the same options model."""
    from edgekit.recipe import STEP_MODELS
    from edgekit.steps import KINDS

    assert set(KINDS) == set(STEP_MODELS) == {"prune", "finetune", "distill", "qat", "quantize"}
    assert all(KINDS[k].options is STEP_MODELS[k] for k in KINDS)
