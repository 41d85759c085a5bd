"""Recipes: an ordered list of steps, each a strict pydantic model discriminated on ``kind``.

An unknown or misspelt key is an error that names the file, the step and the key, and suggests the
closest valid key (never picks it silently). Built-in recipes live in ``recipes/`` and ship in the
wheel, so ``--recipe int8`` resolves by name; any path works too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import RecipeError, did_you_mean
from edgekit.resources import resource_dir

MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 20  # a recipe nests a few levels (steps -> step -> overrides -> layer); more is not a recipe


class StepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf / .nan are refused, naming the key


class LayerOverride(StepOptions):
    """Per-layer quantization settings (by node name or glob pattern)."""

    skip: bool = False  # keep this layer in float
    activation_range: tuple[float, float] | None = None  # fix the layer's input range instead of calibrating it

    @model_validator(mode="after")
    def _ordered(self) -> LayerOverride:
        if self.activation_range is not None and not self.activation_range[0] < self.activation_range[1]:
            raise ValueError(f"activation_range must be [low, high] with low < high (got {list(self.activation_range)})")
        return self


class PruneStep(StepOptions):
    kind: Literal["prune"]
    target_macs_ratio: float | None = Field(default=0.5, gt=0.0, lt=1.0, description="MACs kept = (1 - ratio) x full")
    target_params_ratio: float | None = Field(default=None, gt=0.0, lt=1.0)
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = "l2"
    global_pruning: bool = False
    iterative_steps: int = Field(default=4, ge=1, le=100)
    finetune_epochs_per_step: int = Field(default=0, ge=0, le=1000)
    keep: list[str] = Field(default_factory=list, description="module names or globs never pruned (plus the classifier head)")
    round_to: int | None = Field(default=None, ge=1, le=1024, description="channels go in multiples of this; "
                                 "unset: 8, or 1 where multiples of 8 would overshoot the target (narrow layers)")
    max_pruning_ratio: float = Field(default=0.9, gt=0.0, lt=1.0)
    heads: bool = True  # prune attention heads (whole heads) in transformer layers
    lr: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=64, ge=1, le=65_536)

    @model_validator(mode="after")
    def _one_target(self) -> PruneStep:
        if self.target_params_ratio is not None and "target_macs_ratio" not in self.model_fields_set:
            self.target_macs_ratio = None
        if (self.target_macs_ratio is None) == (self.target_params_ratio is None):
            raise ValueError("give exactly one of target_macs_ratio and target_params_ratio")
        return self


class FinetuneStep(StepOptions):
    kind: Literal["finetune"]
    epochs: int = Field(default=5, ge=1, le=10_000)
    lr: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    data: str | None = None  # default: the lineage root's data


class FeaturePair(StepOptions):
    student: str  # module name in the student
    teacher: str  # module name in the teacher


class DistillStep(StepOptions):
    kind: Literal["distill"]
    epochs: int = Field(default=5, ge=1, le=10_000)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0, description="weight of the KD loss; 1 - alpha on the task loss")
    lr: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    data: str | None = None  # default: the lineage root's data; unlabelled data -> teacher-only targets
    features: list[FeaturePair] = Field(default_factory=list)
    feature_weight: float = Field(default=1.0, ge=0.0)
    student: str | None = None  # another model as the student (zoo name or package.module:factory)
    student_kwargs: dict[str, Any] = Field(default_factory=dict)


class QatStep(StepOptions):
    """Quantization-aware fine-tuning: the model trains with the INT8 rounding of the QDQ graph the next
    (quantize) step writes, whose activation ranges it calibrates first and then keeps fixed."""

    kind: Literal["qat"]
    epochs: int = Field(default=3, ge=1, le=10_000)
    lr: float = Field(default=1e-4, gt=0.0)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    data: str | None = None  # training data; default: the lineage root's data
    teacher: bool = True  # distil from the float model the step starts from
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="weight of the KD loss; 1 - alpha on the task loss")
    calibration: str | None = None  # the ranges' data; default: the lineage root's data (train split)
    samples: int = Field(default=300, ge=1, le=100_000)
    min_samples: int = Field(default=32, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, lt=2**32)
    method: Literal["minmax", "entropy", "percentile", "mse"] = "percentile"
    percentile: float = Field(default=99.999, gt=50.0, le=100.0)
    ignore: list[str] = Field(default_factory=list, description="as the quantize step's: layers kept in float")


class QuantizeStep(StepOptions):
    kind: Literal["quantize"]
    calibration: str | None = None  # data source; default: the lineage root's data (train split)
    samples: int = Field(default=300, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, lt=2**32)
    method: Literal["minmax", "entropy", "percentile", "mse"] = "percentile"  # mse: least expected squared error per tensor
    percentile: float = Field(default=99.999, gt=50.0, le=100.0)
    entropy_bins: int = Field(default=2048, ge=128, le=65536)
    # true: the weights' rounding shift on float input means; full: each layer's whole shift, measured on the QDQ graph
    bias_correction: bool | Literal["full"] = True
    # adaround: each weight rounded down or up so the layer's output on the calibration data stays closest to
    # float (minutes, not seconds; with it, bias_correction defaults to false: its objective includes the shift)
    rounding: Literal["nearest", "adaround"] = "nearest"
    rounding_iterations: int = Field(default=1000, ge=10, le=100_000)  # AdaRound's optimisation steps per layer
    squeeze_excite_float: bool = True  # squeeze-excite branches (pool -> 1x1 layers -> gate) stay float: INT8 saves nothing on a 1x1 map
    profile: Literal["portable", "cpu"] = "portable"  # cpu: asymmetric U8 activations, not TensorRT-portable
    ignore: list[str] = Field(default_factory=list, description="node names, glob patterns or op types kept in float")
    overrides: dict[str, LayerOverride] = Field(default_factory=dict)
    smooth_quant: bool | Literal["auto"] = "auto"  # SmoothQuant on MatMul inputs of transformer graphs
    smooth_alpha: float = Field(default=0.95, ge=0.0, le=1.0)  # NNCF's choice for transformer MatMuls
    max_accuracy_drop: float | None = Field(default=None, ge=0.0, le=1.0)
    max_fallback_fraction: float = Field(default=0.5, gt=0.0, le=1.0, description="at most this share of layers falls back")
    min_samples: int = Field(default=32, ge=1, le=100_000)

    @model_validator(mode="after")
    def _enough_samples(self) -> QuantizeStep:
        if self.samples < self.min_samples:
            raise ValueError(f"samples ({self.samples}) is below min_samples ({self.min_samples})")
        return self


Step = Annotated[PruneStep | FinetuneStep | DistillStep | QatStep | QuantizeStep, Field(discriminator="kind")]
# kind -> options model, read off the union above (the one list of step kinds' options)
STEP_MODELS: dict[str, type[StepOptions]] = {
    get_args(model.model_fields["kind"].annotation)[0]: model for model in get_args(get_args(Step)[0])}


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _quantize_last(self) -> Recipe:
        kinds = [s.kind for s in self.steps]
        if "quantize" in kinds and kinds.index("quantize") != len(kinds) - 1:
            raise ValueError("quantize must be the last step (later steps need a float model)")
        if "qat" in kinds:
            at = kinds.index("qat")
            following = self.steps[at + 1] if at + 1 < len(self.steps) else None
            if not isinstance(following, QuantizeStep):
                raise ValueError("qat must come right before the quantize step (it trains for that step's INT8 graph)")
            if following.profile != "portable" or following.smooth_quant is True:
                raise ValueError("after qat, the quantize step must keep profile: portable and no smooth_quant "
                                 "(qat trains for the symmetric graph as it is)")
        return self

    @property
    def quantizes(self) -> bool:
        return any(s.kind == "quantize" for s in self.steps)


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(resource_dir("recipes").glob("*.yaml"))}


def resolve_recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    builtins = builtin_recipes()
    if name_or_path in builtins:
        return builtins[name_or_path]
    raise RecipeError(
        f"unknown recipe '{name_or_path}'{did_you_mean(name_or_path, builtins)}",
        hint=f"built-in recipes: {', '.join(builtins)}; or give a path to a YAML file",
    )


def _explain(exc: ValidationError, raw: dict[str, Any], where: str) -> RecipeError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    place = where
    valid: list[str] = list(Recipe.model_fields)
    if loc and loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int):
        idx = loc[1]
        step = raw.get("steps", [])[idx] if isinstance(raw.get("steps"), list) else {}
        kind = step.get("kind") if isinstance(step, dict) else None
        place = f"{where}, step {idx + 1}" + (f" ({kind})" if kind else "")
        loc = loc[2:]
        if loc and loc[0] == kind:
            loc = loc[1:]
        model = STEP_MODELS.get(str(kind))
        valid = list(model.model_fields) if model else []
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            return RecipeError(
                f"{place}: unknown step kind '{kind}'{did_you_mean(str(kind), STEP_MODELS)}",
                hint=f"step kinds: {', '.join(STEP_MODELS)}",
            )
        if loc and loc[0] == "overrides" and len(loc) > 2:
            valid = list(LayerOverride.model_fields)
            loc = loc[2:]
    key = ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        last = str(loc[-1]) if loc else key
        return RecipeError(f"{place}: unknown key '{key}'{did_you_mean(last, valid)}",
                           hint=f"valid keys: {', '.join(k for k in valid if k != 'kind')}")
    msg = err["msg"].removeprefix("Value error, ")
    return RecipeError(f"{place}: {key + ': ' if key else ''}{msg}")


def parse_recipe(raw: Any, where: str) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a mapping with 'name' and 'steps'")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, raw, where) from None


class _StrictLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (yaml keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep=deep)


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] or [level])
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value] or [level])
    return level


def read_yaml(path: Path, what: str) -> Any:
    """A small UTF-8 YAML file, safely: no tags that build objects, no duplicate keys, no deep nesting."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path} is {len(data)} bytes; a {what} is a small text file (at most {MAX_RECIPE_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path} is not a text file (not UTF-8)", hint=f"a {what} is a YAML text file") from None
    if "\x00" in text:
        raise RecipeError(f"{path} is not a text file (it holds NUL bytes)", hint=f"a {what} is a YAML text file")
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise RecipeError(f"{path}:{line} is not valid YAML{': ' + problem if problem else ''}") from None
    except RecursionError:
        raise RecipeError(f"{path} nests deeper than a {what} can (more than {MAX_DEPTH} levels)") from None
    if _depth(raw) > MAX_DEPTH:
        raise RecipeError(f"{path} nests deeper than a {what} can (more than {MAX_DEPTH} levels)")
    return raw


def load_recipe(name_or_path: str) -> tuple[Recipe, Path]:
    path = resolve_recipe_path(name_or_path)
    return parse_recipe(read_yaml(path, "recipe"), str(path)), path


def dump_recipe(recipe: Recipe) -> str:
    """The effective recipe, every default filled in (``--print-recipe``)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def with_calibration(recipe: Recipe, calib: str | None) -> Recipe:
    """--calib overrides the calibration source of quantize steps."""
    if not calib:
        return recipe
    steps = [s.model_copy(update={"calibration": calib}) if isinstance(s, QuantizeStep) else s for s in recipe.steps]
    return recipe.model_copy(update={"steps": steps})
