"""Privacy: Shamir secret sharing of keys (binary shares on chain, SLIP-0039 words for people).

:mod:`tsunagi.privacy.shamir` splits a key k of n into checksummed binary shares with a set
digest; :mod:`tsunagi.privacy.slip39` writes and reads SLIP-0039 mnemonics.
"""

from tsunagi.privacy.shamir import Share, combine, split
from tsunagi.privacy.slip39 import combine_mnemonics, split_mnemonics

__all__ = ["Share", "combine", "combine_mnemonics", "split", "split_mnemonics"]
