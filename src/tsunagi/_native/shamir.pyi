"""Native kernel of Shamir secret sharing over GF(256) (ext/shamir.pyx over ext/shamir_kernel.c):
constant-time arithmetic, one call per whole split or combine, the GIL released. See
tsunagi.privacy.shamir, which keeps the plain-Python reference."""

def multiply(a: int, b: int) -> int: ...  # one product in GF(256), for tests
def inverse(a: int) -> int: ...  # a**254, 0 for 0, for tests
def evaluate_shares(secret: bytes, digest: bytes, coefficients: bytes,
                    xs: bytes) -> bytes: ...  # len(xs) values of len(secret) bytes
def interpolate(xs: bytes, values: bytes,
                targets: bytes) -> bytes: ...  # len(targets) values of len(values)//len(xs)
