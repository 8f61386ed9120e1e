"""The LLM client library: engine with its answer cache, transports, the local llama.cpp server, batch files."""
