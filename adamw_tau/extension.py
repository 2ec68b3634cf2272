"""Placeholder replaced below."""
def unavailable_reason(cuda: bool):
    return "the C++ extension is not built yet"
