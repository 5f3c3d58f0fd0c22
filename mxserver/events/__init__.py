"""Events: the frozen event model, building, hashing, redaction and format checks."""
