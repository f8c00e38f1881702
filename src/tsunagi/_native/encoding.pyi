"""Native canonical encoding of contract values (ext/encoding.pyx): the format and refusals of
tsunagi.contracts.encoding, which keeps the plain-Python reference and uses this when built."""

# The bounds compiled in, by their names in tsunagi.contracts.limits.
NATIVE_CONSTANTS: dict[str, int]

def encode(value: object) -> bytes: ...  # EncodingError for what the format refuses
def decode(data: bytes | bytearray | memoryview) -> object: ...  # exactly one canonical value
