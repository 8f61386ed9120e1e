"""LLM processors: the shared ask/check/re-ask loop, FineHumanML3D steps, MATE decomposition, and their checks."""
