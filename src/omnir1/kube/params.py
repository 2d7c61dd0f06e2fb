"""A Kubeflow run's params: what the pipelines' first step (resolve-params) makes of the run
form, and the params.yaml each later step reads.

The run form holds a few typed settings (data source and version, recipe, GPUs, models, ...)
and one `overrides` JSON object of dotted params keys (`{"train.max_steps": 500}`).
`resolve_run` starts from the params.yaml in the image (/app/params.yaml; `omnir1 pipeline
run --local`: the project's), merges the recipe (configs/params/RECIPE.yaml) over it, then the
settings and the overrides, validates the result as any params file (a wrong key or value is
an error naming it), and returns, per stage, the values of the keys that stage reads
(omnir1.stages, plus KUBEFLOW_READS) as a JSON string, with the keys of the data and models.

Those strings are output parameters: Kubeflow's cache key holds input parameters by value
(and input artifacts by identity), so a step is served from the cache unless a value it reads,
the data or the models changed, as `dvc repro` reruns only the stages whose params changed.
Each step writes its values over the image's params.yaml (`stage_params_file`) and runs the
library as the DVC stage does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from omnir1.errors import ConfigError, InputError
from omnir1.stages import STAGES, Stage

# The images keep params.yaml and configs/ in their WORKDIR (docker/*.Dockerfile); a local run
# points these at the project and the params file it was given.
PROJECT_ENV, PARAMS_ENV = "OMNIR1_PROJECT", "OMNIR1_PARAMS"
IMAGE_PROJECT = "/app"
RECIPES = "configs/params"

# What a Kubeflow step reads beyond its DVC stage's `params` (omnir1.stages): DVC runs a
# per-format stage once per format with --format, a step loops over data.formats; the model
# steps resolve a registry URI through tracking.uri; warm start seeds with train.seed; training
# logs to MLflow; register records every params value (its hash and file).
KUBEFLOW_READS: dict[str, tuple[str, ...]] = {
    "data": ("data.formats",),
    "validate": ("data.formats",),
    "preprocess": ("data.formats",),
    "models": ("models.dir", "tracking.uri"),
    "warm_start": ("train.seed",),
    "train": ("tracking",),
    "register": ("*",),
}
# steps.report reads no params (the tracking URI comes from the task's Secret)
NO_PARAMS = {"report"}
EVERYTHING = "*"


@dataclass(frozen=True)
class RunParams:
    """resolve-params' outputs, in this order (components/stages.py declares the same): the
    values each stage reads as JSON, the data and models keys, the GPUs of a training pod."""

    data: str
    validate: str
    preprocess: str
    models: str
    warm_start: str
    train: str
    evaluate: str
    probe: str
    register: str
    data_key: str  # the data sources' version or content
    models_key: str  # training: the base models (models.dir, pinned in `models`)
    model_key: str  # evaluation: the model evaluated
    baseline_key: str  # evaluation: the model it is compared with ("": none)
    model_uri: str  # evaluation: model_uri, a registry alias pinned to its version
    baseline_uri: str  # evaluation: baseline_uri, likewise
    gpus_per_node: int  # train.gpus_per_node: the training pods' GPUs


# ------------------------------------------------------------------------------ params keys


def _sections() -> type[BaseModel]:
    from omnir1.config import Params

    return Params


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by their YAML key (the alias where there is one)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _leaves(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()):
    """(path, field) of every leaf of the Params model, in section order."""
    for key, field in _fields(model or _sections()).items():
        path = (*prefix, key)
        if _is_section(field.annotation):
            yield from _leaves(field.annotation, path)
        else:
            yield path, field


def key_kind(key: str) -> tuple[str, int]:
    """What a dotted params key names: ("section", n), ("field", n) or ("entry", n), where n
    is how many of its parts name model fields; an entry is a key inside a mapping whose keys
    are data (data.sources.revos, register.tolerances.eval.trained.revos.JF). ConfigError for
    a key that names nothing, listing what its parent holds."""
    parts = key.split(".")
    model = _sections()
    for i, part in enumerate(parts):
        fields = _fields(model)
        if part not in fields:
            where = ".".join(parts[:i]) or "params.yaml"
            raise ConfigError(None, f"no such key; {where} has: {', '.join(fields)}", key)
        annotation = fields[part].annotation
        if _is_section(annotation):
            model = annotation
            continue
        if i == len(parts) - 1:
            return "field", i + 1
        if typing.get_origin(annotation) is dict:
            return "entry", i + 1
        raise ConfigError(None, f"{'.'.join(parts[: i + 1])} is not a mapping", key)
    return "section", len(parts)


def _put(tree: dict, key: str, value: Any) -> None:
    """Set the dotted `key` of a params tree: a field or a mapping entry is replaced, a section
    takes the value's keys one by one (the others keep theirs)."""
    kind, depth = key_kind(key)
    parts = key.split(".")
    if kind == "section":
        if not isinstance(value, Mapping):
            raise ConfigError(None, "a section takes a JSON object of its keys", key)
        for name, inner in value.items():
            _put(tree, f"{key}.{name}", inner)
        return
    node = tree
    for part in parts[: depth - 1]:
        node = node.setdefault(part, {})
    if kind == "field":
        node[parts[-1]] = value
    else:  # the rest of the key, dots and all, is one key of the mapping
        mapping = node.get(parts[depth - 1]) or {}
        node[parts[depth - 1]] = {**mapping, ".".join(parts[depth:]): value}


def _get(tree: Mapping, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def stage_keys(stage: Stage) -> tuple[str, ...]:
    """The params keys a stage's Kubeflow steps read: its DVC stage's and KUBEFLOW_READS'
    (those not inside a section the stage already declares whole)."""
    extra = KUBEFLOW_READS.get(stage.name, ())
    if EVERYTHING in extra:
        return extra
    declared = stage.params
    extra = tuple(k for k in extra if not any(k == d or k.startswith(f"{d}.") for d in declared))
    return (*stage.params, *extra)


def stage_values(tree: Mapping, stage: Stage) -> dict[str, Any]:
    """{key: value} of the keys the stage reads, from a validated params tree."""
    keys = stage_keys(stage)
    return dict(tree) if EVERYTHING in keys else {k: _get(tree, k) for k in keys}


def params_stages() -> list[Stage]:
    """The stages with Kubeflow steps that read params (the DVC-only `source` stage's work is
    resolve-params' data key)."""
    return [s for s in STAGES if s.steps and s.name not in NO_PARAMS]


# ------------------------------------------------------------------------- the run's params


def project_folder() -> Path:
    return Path(os.environ.get(PROJECT_ENV) or IMAGE_PROJECT)


def base_params_file() -> Path:
    """The params.yaml a run starts from: the image's, or OMNIR1_PARAMS (local runs)."""
    return Path(os.environ.get(PARAMS_ENV) or project_folder() / "params.yaml")


def recipe_file(name: str) -> Path:
    folder = project_folder() / RECIPES
    valid = sorted(p.stem for p in folder.glob("*.yaml"))
    if name not in valid:
        raise ConfigError(folder, f"unknown recipe {name!r}; valid: {valid}", "recipe")
    return folder / f"{name}.yaml"


def parse_overrides(text: str) -> dict[str, Any]:
    """The run's `overrides`: a JSON object of dotted params keys."""
    example = 'e.g. {"train.max_steps": 500}'
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(None, f"not JSON ({exc.msg}); {example}", "overrides") from None
    if not isinstance(value, dict):
        raise ConfigError(None, f"expected a JSON object of params keys, {example}", "overrides")
    return value


def resolve_params(
    base: str | Path,
    recipe: str = "",
    settings: Mapping[str, tuple[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
):
    """The run's Params: `base` with the recipe merged over it, then `settings` ({params key:
    (run setting, value)}) and `overrides` set; an error names the override or setting whose
    value is wrong (a key set by both is refused)."""
    from pydantic import ValidationError

    from omnir1.config import Params, load_params
    from omnir1.rl.rewards import check_reward_names

    tree = load_params(base, [recipe_file(recipe)] if recipe else []).model_dump(
        by_alias=True, mode="json"
    )
    origin: dict[str, str] = {}
    for key, (setting, value) in (settings or {}).items():
        _put(tree, key, value)
        origin[key] = setting
    for key, value in (overrides or {}).items():
        try:
            _put(tree, key, value)
        except ConfigError as err:
            raise ConfigError(None, err.message, f"overrides: {key}") from None
        if key in origin:
            message = f"also set by the run's {origin[key]}: give it once"
            raise ConfigError(None, message, f"overrides: {key}")
        origin[key] = f"overrides: {key}"

    def failed(field: str, message: str) -> ConfigError:
        """The error, named after the override or setting the failing field came from."""
        hits = [k for k in origin if k == field or f"{field}.".startswith(f"{k}.")]
        hits += [k for k in origin if k.startswith(f"{field}.")]
        if not hits:  # the base or the recipe is wrong (load_params names those files)
            return ConfigError(base, message, field)
        name = origin[max(hits, key=len)]
        return ConfigError(None, message if name.endswith(field) else f"{field}: {message}", name)

    try:
        params = Params.model_validate(tree)
        check_reward_names(params.rewards.names)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise failed(".".join(str(p) for p in first["loc"]), first["msg"]) from None
    except ConfigError as err:
        raise failed(err.field or "", err.message) from None
    return params


def resolve_run(
    pipeline: str,
    recipe: str = "",
    overrides: str = "{}",
    data_source: str = "",
    data_version: str = "",
    gpus_per_node: int = 0,
    base_models: str = "",
    model_uri: str = "",
    baseline_uri: str = "",
) -> RunParams:
    """resolve-params: the run form (empty settings keep params.yaml's values) as RunParams.
    `pipeline`: training (keys its base models) or evaluation (its model and baseline)."""
    from omnir1.data.fetch import source_key, source_of

    settings = {
        "data.source": ("data_source", data_source),
        "models.dir": ("base_models", base_models),
        "train.gpus_per_node": ("gpus_per_node", gpus_per_node),
    }
    params = resolve_params(
        base_params_file(),
        recipe,
        {k: v for k, v in settings.items() if v[1]},
        parse_overrides(overrides),
    )
    tree = params.model_dump(by_alias=True, mode="json")
    keys = {"models_key": "", "model_key": "", "baseline_key": ""}
    uris = {"model_uri": "", "baseline_uri": ""}
    if pipeline == "training":
        tree["models"]["dir"], keys["models_key"] = pinned_model(params, params.models.dir)
    else:
        uris["model_uri"], keys["model_key"] = pinned_model(params, model_uri, "model_uri")
        uris["baseline_uri"], keys["baseline_key"] = pinned_model(
            params, baseline_uri, "baseline_uri"
        )
    values = {s.name: _json(stage_values(tree, s)) for s in params_stages()}
    formats = params.data.formats
    if data_version:  # the user names the version: the sources are not read
        data = {"version": data_version, "sources": {f: source_of(params, f) for f in formats}}
    else:
        data = {f: source_key(params, f) for f in formats}
    return RunParams(
        **values,
        data_key=digest(data),
        **keys,
        **uris,
        gpus_per_node=params.train.gpus_per_node,
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(record: Any) -> str:
    return hashlib.sha256(_json(record).encode()).hexdigest()


# ------------------------------------------------------------------- data and models keys


def listing(uri: str, field: str) -> list:
    """What a models S3 prefix or folder holds, cheaply: [key, size, ETag] of every object, or
    [path, size, mtime] of every file (the data sources': omnir1.data.fetch.source_key)."""
    from omnir1 import s3

    if s3.is_s3(uri):
        return [[o["key"], o["size"], o["etag"]] for o in s3.list_objects(uri)]
    root = Path(uri)
    if not root.is_dir():
        raise InputError(uri, "no such model folder (nor a models:/ or s3:// URI)", field)
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            out.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return out


def pinned_model(params, uri: str, field: str = "models.dir") -> tuple[str, str]:
    """(URI, key) of the models at `uri`: a registry alias as the version it names now
    (models:/NAME/VERSION: the fetch step gets what was keyed, even if the alias moves
    meanwhile), the others as given; the key is the embedded tiny models' params, the
    version's run and source, or an S3 prefix's or a folder's listing. ("", "") for none."""
    if not uri:
        return "", ""
    from omnir1.registry import builds_tiny_models

    if builds_tiny_models(uri):
        return uri, digest({"embedded": params.models.tiny.model_dump(mode="json")})
    if uri.startswith("models:/"):
        from omnir1.registry import registered_version

        version = registered_version(params, uri)
        pinned = f"models:/{version['name']}/{version['version']}"
        return pinned, digest({"uri": pinned, "version": version})
    return uri, digest({"uri": uri, "listing": digest(listing(uri, field))})


# ------------------------------------------------------------------------- inside each step


@contextlib.contextmanager
def stage_params_file(values: str, base: str | Path | None = None) -> Iterator[str]:
    """A params.yaml for one step, removed after it: `base` (the image's) with the stage's
    `values` (JSON of resolve-params) in place; yields its path."""
    import yaml

    from omnir1.config import load_params

    tree = load_params(base or base_params_file()).model_dump(by_alias=True, mode="json")
    for key, value in json.loads(values).items():
        if key in tree:  # a section whole (its full, validated values): replaced
            tree[key] = value
        else:
            *parents, leaf = key.split(".")
            node = tree
            for part in parents:
                node = node[part]
            node[leaf] = value
    with tempfile.TemporaryDirectory(prefix="omnir1-params-") as folder:
        path = Path(folder) / "params.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
        yield str(path)


# --------------------------------------------------------------------- pipeline arguments


def fold_overrides(arguments: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict:
    """Run arguments for a pipeline whose parameters are `parameters` (names; a mapping's
    keys): a name that is no parameter but a params key (`train.max_steps`, or the older
    `train__max_steps`) joins the `overrides` JSON. ConfigError names anything else."""
    out: dict[str, Any] = {}
    folded: dict[str, Any] = {}
    for name, value in arguments.items():
        if name in parameters:
            out[name] = value
            continue
        key = name.replace("__", ".")
        if "." not in key:
            valid = ", ".join(sorted(parameters))
            raise ConfigError(
                None, f"neither a pipeline parameter ({valid}) nor a dotted params key", name
            )
        key_kind(key)
        folded[key] = value
    if folded:
        given = parse_overrides(out.get("overrides", "{}"))
        out["overrides"] = json.dumps({**given, **folded})
    return out
