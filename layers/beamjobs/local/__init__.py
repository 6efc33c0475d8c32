"""Local mode: the embedded AWS, the local executor, and in-memory twins."""
