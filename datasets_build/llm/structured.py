"""Constrained decoding: the form an answer must take, and how each kind of server is told.

A `Constraint` is one prompt's answer form written twice: a JSON schema and a GBNF grammar whose
language lies inside the schema's (the grammar may be stricter: bounded lengths, no escapes). How
a request carries it depends on the server and the mode (`auto`, `grammar`, `json-schema`, `off`):

    server       grammar                              json-schema
    llama.cpp    grammar: GBNF                        response_format: {type: json_object, schema}
    vllm         structured_outputs: {grammar: GBNF}  structured_outputs: {json: schema}
    openai       (none: an error)                     response_format: {type: json_schema, json_schema:
    compatible   grammar: GBNF                          {name, strict: true, schema (object at the root)}}

`auto` is `grammar` for llama.cpp (llama-cpp-python and llama-server) and `json-schema` elsewhere.
Servers ignore fields they do not know, so the engine checks every answer against the schema
(`Constraint.matches`) and counts the ones that do not match.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from datasets_build.core.errors import UserError
from datasets_build.core.hashing import stable_hash

MODES = ("auto", "grammar", "json-schema", "off")
SERVERS = ("openai", "vllm", "llama.cpp", "compatible")
_OWNERS = {"vllm": "vllm", "llamacpp": "llama.cpp", "me": "llama.cpp"}  # /models `owned_by` -> server kind
_WRAP_KEY = "items"  # OpenAI's strict schemas need an object at the root: a list goes under this key


class ConstraintError(UserError, ValueError):
    """A constraint mode that the server cannot take."""


@dataclass(frozen=True)
class Constraint:
    name: str  # e.g. "fine_steps.v2"
    schema_json: str  # the JSON schema, as JSON (keeps the dataclass hashable)
    grammar: str  # GBNF; its language lies inside the schema's

    @classmethod
    def of(cls, name: str, schema: dict[str, Any], grammar: str) -> "Constraint":
        return cls(name, json.dumps(schema, sort_keys=True), grammar.strip() + "\n")

    @cached_property
    def schema(self) -> dict[str, Any]:
        return json.loads(self.schema_json)

    @cached_property
    def digest(self) -> str:
        """What the cache key holds: changes with the schema or the grammar."""
        return stable_hash([self.name, self.schema_json, self.grammar])

    def object_schema(self) -> dict[str, Any]:
        """The schema with an object at its root (what OpenAI's strict mode accepts)."""
        if self.schema.get("type") == "object":
            return self.schema
        return {"type": "object", "properties": {_WRAP_KEY: self.schema}, "required": [_WRAP_KEY],
                "additionalProperties": False}

    def fields(self, mode: str, server: str) -> dict[str, Any]:
        """The request fields that carry this constraint (`mode` resolved: grammar, json-schema, off)."""
        if mode == "off":
            return {}
        if server == "vllm":
            return {"structured_outputs": {"grammar": self.grammar} if mode == "grammar" else {"json": self.schema}}
        if mode == "grammar":
            return {"grammar": self.grammar}
        if server == "llama.cpp":
            return {"response_format": {"type": "json_object", "schema": self.schema}}
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", self.name)[:64], "strict": True, "schema": self.object_schema()}}}

    def matches(self, text: str, mode: str, server: str) -> bool:
        """Whether an answer has the form this constraint asked for."""
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return False
        wrapped = mode == "json-schema" and server not in ("llama.cpp", "vllm")
        return conforms(value, self.object_schema() if wrapped else self.schema)


def field_name(mode: str, server: str) -> str:
    """The request field that carries a constraint, for messages."""
    if server == "vllm":
        return "structured_outputs." + ("grammar" if mode == "grammar" else "json")
    return "grammar" if mode == "grammar" else "response_format"


def resolve_mode(requested: str, server: str) -> str:
    """`auto` made concrete for a server kind; a grammar for OpenAI is an error."""
    if requested not in MODES:
        raise ConstraintError(f"unknown constraint mode {requested!r}; one of {', '.join(MODES)}")
    if requested == "auto":
        return "grammar" if server == "llama.cpp" else "json-schema"
    if requested == "grammar" and server == "openai":
        raise ConstraintError("the OpenAI API takes no grammar, only a JSON schema (json-schema) or none (off)")
    return requested


def server_of_url(base_url: str | None) -> str | None:
    """The server kind a URL alone tells (OpenAI's own), else None."""
    if not base_url:
        return "openai"
    host = urlsplit(base_url).hostname or ""
    return "openai" if host == "api.openai.com" else None


def detect_server(base_url: str | None, api_key: str | None = None, timeout: float = 3.0) -> str:
    """The server kind behind an OpenAI-compatible base URL, from its `/models` answer (`owned_by`:
    vllm, llamacpp for llama-server, me for llama-cpp-python); `compatible` when unknown or unreachable."""
    known = server_of_url(base_url)
    if known:
        return known
    request = urllib.request.Request(base_url.rstrip("/") + "/models",
                                     headers={"Authorization": f"Bearer {api_key or 'not-needed'}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            models = json.loads(response.read()).get("data") or []
    except (OSError, ValueError, AttributeError):
        return "compatible"
    for model in models:
        owner = model.get("owned_by") if isinstance(model, dict) else None
        if owner in _OWNERS:
            return _OWNERS[owner]
        if isinstance(model, dict) and "meta" in model and "n_ctx_train" in (model.get("meta") or {}):
            return "llama.cpp"  # llama-server without owned_by
    return "compatible"


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Whether a JSON value fits a schema, for the keywords the constraints use: type, properties,
    required, additionalProperties, items, minItems, maxItems, minLength, maxLength, pattern."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        properties = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        if schema.get("additionalProperties") is False and any(name not in properties for name in value):
            return False
        return all(conforms(value[name], sub) for name, sub in properties.items() if name in value)
    if kind == "array":
        if not isinstance(value, list):
            return False
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        return all(conforms(item, schema.get("items", {})) for item in value)
    if kind == "string":
        if not isinstance(value, str):
            return False
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        return "pattern" not in schema or _pattern(schema["pattern"]).search(value) is not None
    return True


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile(pattern)
