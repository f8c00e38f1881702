# Limits the native code needs, mirrored from src/tsunagi/limits.py (tests/test_limits.py
# checks they agree).
cdef enum:
    header_bytes = 80
    hash_bytes = 32
    threads_max = 256
