"""The bottom layer: errors, stable hashing and file signatures, dependency checks, the SQLite key-value store. Imports nothing of the project."""
