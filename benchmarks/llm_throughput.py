"""LLM engine throughput against a loopback chat server with 100 ms latency, and a warm re-run.

    .venv/bin/python benchmarks/llm_throughput.py

1. 5,000 captions, concurrency 64: requests per second of the engine alone, and of the
   fine-steps processor fed in batches of 256 motions (3 captions each) as an LLM recipe feeds it,
   against the server's capacity (concurrency / latency = 640 requests/s). The processor's
   requests carry its constraint (a JSON schema: the loopback server plays a compatible server
   that honours it), and every answer is compared with it and checked.
2. Warm cache: 44,970 captions (HumanML3D's count) whose answers are all cached, through the
   fine-steps processor (cache look-ups, checks, output rows): wall time, no request sent.
The server runs in its own process so that it does not share the client's interpreter.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from chat_server import ChatServer, fine_json_answer  # noqa: E402
from datasets_build.llm.engine import ChatRequest, ChatResult, LLMConfig, LLMEngine  # noqa: E402
from processors.llm.fine_steps import FineSteps  # noqa: E402
from prompts import load_prompt  # noqa: E402

LATENCY, CONCURRENCY = 0.1, 64


def _serve(latency: float, pipe) -> None:
    with ChatServer(latency=latency) as server:
        pipe.send((server.port,))
        pipe.recv()  # until the benchmark says stop
        pipe.send(len(server.log))


def _batches(captions: list[str], per_row: int = 3, rows: int = 256):
    """Batches shaped like a build's: `rows` motions (LLM recipes feed 256) of `per_row` annotations."""
    step = per_row * rows
    for start in range(0, len(captions), step):
        chunk = captions[start : start + step]
        annotations = [[{"caption": c} for c in chunk[i : i + per_row]] for i in range(0, len(chunk), per_row)]
        yield {"mirrored": [False] * len(annotations), "annotations": annotations}


def main() -> None:
    prompt = load_prompt(FineSteps.prompt)
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(LATENCY, child), daemon=True)
    server.start()
    (port,) = parent.recv()
    base_url = f"http://127.0.0.1:{port}/v1"
    capacity = CONCURRENCY / LATENCY
    with tempfile.TemporaryDirectory() as tmp:
        config = LLMConfig(model="bench", base_url=base_url, concurrency=CONCURRENCY,
                           cache_path=str(Path(tmp) / "engine.sqlite"))
        requests = [ChatRequest(tuple((m["role"], m["content"]) for m in prompt.messages(caption=f"a person walks {i}")),
                                prompt.version) for i in range(5000)]
        started, cpu = time.perf_counter(), time.process_time()
        results = LLMEngine(config).run(requests)
        engine_rate = len(requests) / (time.perf_counter() - started)
        engine_cpu = (time.process_time() - cpu) / len(requests)  # this process only: the server has its own
        assert all(r.text for r in results)

        fine = FineSteps(llm=LLMConfig(model="bench", base_url=base_url, concurrency=CONCURRENCY,
                                       cache_path=str(Path(tmp) / "fine.sqlite")))
        captions = [f"a person jumps {i}" for i in range(5000)]
        started = time.perf_counter()
        for batch in _batches(captions):
            fine(batch)
        processor_rate = len(captions) / (time.perf_counter() - started)
        sent = fine.engine().counters["sent"]

        # Warm cache for 44,970 captions: the answers the server would give, stored under their keys.
        warm = FineSteps(llm=LLMConfig(model="bench", base_url="http://127.0.0.1:9/v1",  # nothing listens
                                       cache_path=str(Path(tmp) / "warm.sqlite")))
        engine = warm.engine()
        captions = [f"a person kicks with the left leg, variant {i}" for i in range(44970)]
        for batch in _batches(captions, rows=2000):
            for request in warm.first_requests(batch):
                engine.cache.put(request.key(warm.llm), request, warm.llm,
                                 ChatResult(fine_json_answer(request.messages[-1][1].rsplit("Caption:", 1)[-1].strip())))
        started = time.perf_counter()
        checked = 0
        for batch in _batches(captions):
            checked += sum(f["status"] == "checked" for row in warm(batch)["fine"] for f in row)
        warm_seconds = time.perf_counter() - started
    parent.send("stop")
    served = parent.recv()
    server.join(5)
    print(f"server: {LATENCY * 1000:.0f} ms latency, concurrency {CONCURRENCY}: capacity {capacity:.0f} requests/s")
    print(f"engine alone, 5,000 requests:            {engine_rate:6.0f} requests/s = {engine_rate / capacity:.0%} "
          f"of capacity (client CPU {engine_cpu * 1000:.2f} ms/request)")
    print(f"fine-steps processor, 256-row batches:    {processor_rate:6.0f} requests/s = {processor_rate / capacity:.0%} "
          f"of capacity ({sent:,} sent)")
    print(f"warm re-run, 44,970 cached captions:     {warm_seconds:6.1f} s, {checked:,} checked, "
          f"{engine.counters['sent']} requests sent; server saw {served:,} requests in all")
    print("targets: >= 80% of capacity; warm re-run <= 30 s")


if __name__ == "__main__":
    main()
