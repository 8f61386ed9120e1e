"""The LLM engine against a real chat-completions server on loopback (no mock of the client)."""

import json
import time

import pytest

from chat_server import ChatServer
from datasets_build.llm import ChatRequest, LLMConfig, LLMEngine, export_batch, import_batch


def _requests(n, prefix="caption"):
    return [ChatRequest((("system", "be precise"), ("user", f"Caption: {prefix} {i}")), "test.v1") for i in range(n)]


def _engine(server, tmp_path, **kwargs):
    kwargs.setdefault("timeout", 1.0)
    return LLMEngine(LLMConfig(model="test-model", base_url=server.base_url, cache_path=str(tmp_path / "llm.sqlite"),
                               **kwargs))


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_answers_are_cached_and_never_asked_twice(tmp_path):
    with ChatServer() as server:
        engine = _engine(server, tmp_path)
        first = engine.run(_requests(5))
        assert all(r.text and not r.cached for r in first) and len(server.log) == 5
        again = _engine(server, tmp_path).run(_requests(5) + _requests(1, "new"))
        assert [r.cached for r in again] == [True] * 5 + [False]
        assert [r.text for r in again[:5]] == [r.text for r in first]
        assert len(server.log) == 6


def test_identical_requests_in_one_run_are_sent_once(tmp_path):
    with ChatServer() as server:
        results = _engine(server, tmp_path).run(_requests(3) + _requests(3))
        assert len(server.log) == 3 and results[0].text == results[3].text


def test_429_retry_after_500_and_hangs_are_retried_until_answered(tmp_path):
    for fault in ("429", "500", "hang", "bad_json"):
        with ChatServer(fault_rate=1.0, faults=(fault,), hang_seconds=2) as server:
            engine = _engine(server, tmp_path / fault, max_retries=2)
            started = time.monotonic()
            result = engine.run(_requests(1))[0]
            assert result.text is None and result.error and engine.counters["failures"] == 1
            assert engine.counters["sent"] == 3 and engine.counters["retries"] == 2
            if fault == "429":  # retry-after: 0.05 s, honoured instead of the exponential backoff
                assert time.monotonic() - started < 1.0
    with ChatServer(fault_rate=0.5, faults=("429", "500", "hang"), hang_seconds=2, seed=3) as server:
        engine = _engine(server, tmp_path / "mixed", max_retries=8)
        results = engine.run(_requests(20))
        assert all(r.text for r in results) and engine.counters["retries"] > 0


def test_a_client_error_is_not_retried_and_no_key_is_a_clear_error(tmp_path, monkeypatch):
    engine = LLMEngine(LLMConfig(cache_path=str(tmp_path / "c.sqlite")))
    with pytest.raises(Exception, match="set OPENAI_API_KEY"):
        engine.run(_requests(1))


def test_batch_export_and_import_feed_the_same_cache(tmp_path):
    with ChatServer() as server:
        engine = _engine(server, tmp_path)
        requests = _requests(4)
        assert export_batch(engine.pending(requests), engine.config, tmp_path / "batch.jsonl") == 4
        lines = [json.loads(line) for line in (tmp_path / "batch.jsonl").read_text().splitlines()]
        assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["model"] == "test-model"
        # what the Batch API / vllm run-batch writes back
        results = [{"custom_id": line["custom_id"], "response": {"status_code": 200, "body": {
            "model": "test-model", "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}}, "error": None} for i, line in enumerate(lines[:3])]
        results.append({"custom_id": lines[3]["custom_id"], "response": None, "error": {"message": "expired"}})
        (tmp_path / "results.jsonl").write_text("\n".join(map(json.dumps, results)) + "\nnot json\n")
        imported, problems = import_batch(tmp_path / "results.jsonl", engine)
        assert imported == 3 and len(problems) == 2 and "line 5" in problems[1]
        assert len(engine.pending(requests)) == 1
        answers = engine.run(requests)
        assert [a.text for a in answers[:3]] == ["answer 0", "answer 1", "answer 2"] and len(server.log) == 1
