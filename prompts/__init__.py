"""Versioned prompt templates, labelled intent examples and output schemas (data, loaded with importlib.resources).

`render(name, **variables)` is the one way a prompt is made: a missing variable is an error, never an
empty string silently sent to a model."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from jinja2.utils import htmlsafe_json_dumps


def _load(name: str) -> str | None:
    path = resources.files(__name__) / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _tojson(value: Any, indent: int | None = None) -> str:
    """Jinja's tojson (`<`, `>`, `&` escaped, so quoted data cannot close a tag), strict about undefined."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # json.dumps would fail with a TypeError that names no variable
    return htmlsafe_json_dumps(value, dumps=json.dumps, sort_keys=True, indent=indent)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FunctionLoader(_load), undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    return env


def render(name: str, **variables: Any) -> str:
    """Render `prompts/<name>.j2`; raises jinja2.UndefinedError when a variable is missing."""
    return environment().get_template(f"{name}.j2").render(**variables).strip() + "\n"


def templates() -> list[str]:
    """Every top-level template's name (without `.j2`)."""
    return sorted(p.name[:-3] for p in resources.files(__name__).iterdir() if p.name.endswith(".j2"))


def schema(name: str) -> dict[str, Any]:
    """The JSON schema of one structured output, `prompts/schemas/<name>.json`."""
    return json.loads((resources.files(__name__) / "schemas" / f"{name}.json").read_text(encoding="utf-8"))
