"""params.yaml as Kubeflow pipeline parameters, and back.

Every leaf of params.yaml is one pipeline parameter named by its dotted path with "__" for the
dots (`train.learning_rate` -> `train__learning_rate`), typed and defaulted from the project's
params.yaml, so the Kubeflow UI offers every hyper-parameter with the value `dvc repro` uses.
Mappings whose keys are data (data.sources, validate.splits, register.closer_to, ...) are one
dict parameter each: a user may add keys to them. The pipeline's first step renders the values
back into a params.yaml artifact (validated like any params file) that every stage reads.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from omnir1.errors import ConfigError

SEP = "__"


@dataclass(frozen=True)
class PipelineParameter:
    name: str  # train__learning_rate
    path: tuple[str, ...]  # ("train", "learning_rate")
    annotation: type  # int, float, bool, str, list or dict
    default: Any


def _sections() -> type[BaseModel]:
    from omnir1.config import Params

    return Params


def _base_type(annotation: Any) -> type:
    """int | None -> int; list[str] -> list; dict[...] -> dict; Literal['a'] -> str."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
        raise TypeError(f"no single pipeline type for {annotation!r}")
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0])
    if origin in (list, tuple):
        return list
    if origin is dict:
        return dict
    if annotation in (bool, int, float, str):
        return annotation
    raise TypeError(f"no pipeline type for {annotation!r}")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _leaves(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()):
    """(path, field) of every leaf of the Params model, in section order."""
    for field_name, field in (model or _sections()).model_fields.items():
        path = (*prefix, field.alias or field_name)
        if _is_section(field.annotation):
            yield from _leaves(field.annotation, path)
        else:
            yield path, field


def pipeline_parameters(params_file: str | Path = "params.yaml") -> list[PipelineParameter]:
    """One parameter per leaf of `params_file` (validated first), in the file's section order."""
    from omnir1.config import load_params

    values = load_params(params_file).model_dump(by_alias=True, mode="json")
    out = []
    for path, field in _leaves():
        default = values
        for key in path:
            default = default[key]
        annotation = _base_type(field.annotation)
        if annotation is float and isinstance(default, int):
            default = float(default)
        out.append(PipelineParameter(SEP.join(path), path, annotation, default))
    return out


def nest(values: dict[str, Any]) -> dict:
    """{"train__learning_rate": 1e-4, ...} -> {"train": {"learning_rate": 1e-4}, ...}."""
    known = {SEP.join(path): path for path, _ in _leaves()}
    nested: dict = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(None, f"unknown pipeline parameter {name!r}", name)
        node = nested
        *parents, leaf = known[name]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def render_params(values: dict[str, Any], out: str | Path) -> dict:
    """Write the params.yaml that pipeline parameter `values` describe, validated as any params
    file is (a wrong value is an error naming its pipeline parameter); returns the mapping."""
    import yaml

    from omnir1.config import load_params
    from omnir1.fsutil import atomic_path
    from omnir1.rl.rewards import check_reward_names

    nested = nest(values)
    with atomic_path(out) as staging:
        staging.write_text(yaml.safe_dump(nested, sort_keys=False), encoding="utf-8")
        try:
            check_reward_names(load_params(staging).rewards.names)
        except ConfigError as err:
            name = (err.field or "").replace(".", SEP) or None
            raise ConfigError(None, err.message, name) from None
    return nested
