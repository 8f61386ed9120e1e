"""Where chunk tasks run: the local executor (this process or a fork pool)."""
