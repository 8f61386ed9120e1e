"""Constrained decoding: each kind of server gets its constraint field, the cache key holds the
constraint, and a server that ignores the field is detected, counted and warned about once."""

import json
import logging

import pytest

from chat_server import ChatServer
from datasets_build.llm.engine import ChatRequest, LLMConfig, LLMEngine
from datasets_build.llm.structured import ConstraintError, conforms, detect_server, resolve_mode
from datasets_build.recipes.options import LLMOptions
from processors.llm.decompose import Decompose
from processors.llm.decompose_check import subtexts_constraint
from processors.llm.fine_check import check_fine_answer, fine_steps_constraint
from processors.llm.fine_steps import FineSteps

CAPTIONS = ["a person walks forward", "a man jumps and then waves", "someone kicks with the left leg"]


@pytest.fixture(autouse=True)
def _no_openai_settings(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _batch(captions=CAPTIONS):
    return {"mirrored": [False], "annotations": [[{"caption": c, "tokens": [], "pos": []} for c in captions]]}


def _fine(config: LLMConfig) -> FineSteps:
    return FineSteps(llm=config, max_attempts=1)


def _config(server, tmp_path, **options) -> LLMConfig:
    """What the recipes make: the server kind asked from /models unless given."""
    return LLMOptions(llm_base_url=server.base_url, llm_model="test-model", **options).config(tmp_path)


@pytest.mark.parametrize("owned_by, kind, field", [
    ("llamacpp", "llama.cpp", "grammar"),  # llama-server
    ("me", "llama.cpp", "grammar"),  # llama-cpp-python's server (what --llm local runs)
    ("vllm", "vllm", "structured_outputs"),
    ("ollama", "compatible", "response_format"),
])
def test_each_server_kind_receives_its_constraint_field(tmp_path, owned_by, kind, field):
    with ChatServer(owned_by=owned_by) as server:
        config = _config(server, tmp_path)
        assert config.server == kind
        fine = _fine(config)
        rows = fine(_batch())["fine"][0]
        fine.teardown()
    assert [f["status"] for f in rows] == ["checked"] * 3 and len(rows[0]["steps"]) == 3
    assert all(set(entry["constraint"]) == {field} for entry in server.log) and len(server.log) == 3
    sent = server.log[0]["constraint"][field]
    if kind == "llama.cpp":
        assert sent.startswith("root ::= ") and 'pseudo_code' in sent
    elif kind == "vllm":
        assert list(sent) == ["json"] and sent["json"]["properties"]["steps"]["maxItems"] == 8
    else:
        assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert fine.counters["llm_constrained"] == 3 and fine.counters["llm_constraint_ignored"] == 0


def test_openai_gets_a_strict_schema_with_an_object_at_the_root(tmp_path):
    with ChatServer() as server:
        config = LLMConfig(model="m", base_url=server.base_url, server="openai", cache_path=str(tmp_path / "c.sqlite"))
        decompose = Decompose(llm=config, max_attempts=1)
        decompose(_batch(["a person walks forward and then sits down"]))
        decompose.teardown()
    schema = server.log[0]["constraint"]["response_format"]["json_schema"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["items"]["type"] == "array"
    with pytest.raises(ConstraintError, match="no grammar"):
        LLMConfig(server="openai", structured="grammar")


def test_modes_can_be_chosen_and_turned_off(tmp_path):
    with ChatServer(owned_by="vllm") as server:
        for mode, expected in (("grammar", {"grammar"}), ("json-schema", {"json"}), ("off", None)):
            engine = LLMEngine(_config(server, tmp_path / mode, llm_structured=mode))
            request = ChatRequest((("user", "Caption: a man waves"),), "p.v1", subtexts_constraint(8))
            engine.run([request])
            engine.close()
            got = server.log[-1]["constraint"]
            assert (set(got["structured_outputs"]) if got else None) == expected
    assert resolve_mode("auto", "llama.cpp") == "grammar" and resolve_mode("auto", "vllm") == "json-schema"


def test_the_cache_key_holds_the_constraint(tmp_path):
    request = ChatRequest((("user", "Caption: x"),), "p.v1", subtexts_constraint(8))
    keys = {LLMConfig(server="vllm", structured=mode).mode(): request.key(LLMConfig(server="vllm", structured=mode))
            for mode in ("grammar", "json-schema", "off")}
    assert len(set(keys.values())) == 3
    unconstrained = ChatRequest(request.messages, "p.v1")
    assert keys["off"] == unconstrained.key(LLMConfig(server="vllm"))  # no constraint: the key as before
    other = ChatRequest(request.messages, "p.v1", subtexts_constraint(4))
    assert other.key(LLMConfig(server="vllm")) != request.key(LLMConfig(server="vllm"))


def test_a_server_that_ignores_the_constraint_is_detected_counted_and_warned_once(tmp_path, caplog):
    with ChatServer(owned_by="vllm", honours=()) as server, caplog.at_level(logging.WARNING):
        fine = _fine(_config(server, tmp_path))
        rows = fine(_batch())["fine"][0]
        fine.teardown()
    assert fine.counters["llm_constraint_ignored"] == 3 == fine.counters["llm_constrained"]
    warnings = [r.getMessage() for r in caplog.records if "constraint_ignored" in r.getMessage()]
    assert len(warnings) == 1 and "vllm" in warnings[0] and "structured_outputs.json" in warnings[0]
    # every answer is still checked: the tagged text it sent passes the same check
    assert [f["status"] for f in rows] == ["checked"] * 3
    assert "the server seems to ignore the constraint" in fine.describe(fine.counters)


def test_answers_cut_at_the_token_limit_are_not_taken_for_an_ignored_constraint(tmp_path):
    with ChatServer(owned_by="vllm", fault_rate=1.0, faults=("truncated",)) as server:
        fine = _fine(_config(server, tmp_path))
        rows = fine(_batch())["fine"][0]
        fine.teardown()
    assert fine.counters["llm_truncated"] == 3 and fine.counters["llm_constraint_ignored"] == 0
    assert [f["status"] for f in rows] == ["failed"] * 3
    summary = fine.describe(fine.counters)
    assert "3 annotations: 0 checked, 3 failed, 0 errors" in summary
    assert "most failed; why: the answer is not JSON (3)" in summary and "cut at the token limit" in summary


def test_the_server_kind_comes_from_models_or_the_url():
    assert detect_server(None) == "openai" and detect_server("https://api.openai.com/v1") == "openai"
    assert detect_server("http://127.0.0.1:9/v1", timeout=0.5) == "compatible"  # nothing listens
    assert LLMOptions(llm="local").config("/tmp/x").server == "llama.cpp"
    assert LLMOptions(llm_base_url="http://127.0.0.1:9/v1", llm_server="vllm").config("/tmp/x").server == "vllm"


def test_the_json_form_renders_into_both_tagged_paragraphs():
    answer = json.dumps({"steps": [
        {"title": "standing", "description": "The person stands upright.", "pseudo_code": "stand(upright)"},
        {"title": "stepping", "description": "The left foot moves forward.",
         "pseudo_code": "step(left foot forward)"}]})
    constraint = fine_steps_constraint(2, 8)
    assert constraint.matches(answer, "grammar", "llama.cpp")
    result = check_fine_answer(answer)
    assert result.ok and [s.title for s in result.steps] == ["standing", "stepping"]
    assert result.steps[1].pseudo_code == "step(left foot forward)"
    bad = json.dumps({"steps": [{"title": "a", "description": "x", "pseudo_code": "no call"},
                                {"title": "b", "description": "y"}]})
    verdict = check_fine_answer(bad)
    assert not verdict.ok and "step 2 has no pseudo_code text" in verdict.reasons
    assert any("not of the form name(arguments)" in r for r in verdict.reasons)
    assert not conforms(json.loads(bad), constraint.schema)
    assert not conforms({"steps": [json.loads(answer)["steps"][0]]}, constraint.schema)  # one step: < 2
