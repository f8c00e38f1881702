"""The document vault and its keys (docs/FORMAT.md, README "Design").

:mod:`tsunagi.privacy.shamir` splits a part key k of n into checksummed binary shares with a
set digest; :mod:`tsunagi.privacy.slip39` writes and reads SLIP-0039 mnemonics for people;
:mod:`tsunagi.privacy.holders` seals fragments to holders (HPKE) and keeps their keys on a
device; :mod:`tsunagi.privacy.pins` unlocks them with a PIN the confidentiality service
rate-limits; :mod:`tsunagi.privacy.channel` carries a fragment from a holder to the service
over an authenticated key agreement; :mod:`tsunagi.privacy.vault_contract` keeps documents and
the workflow of their requests on a chain, and :mod:`tsunagi.privacy.vault` is the Python API
of it and the service's side that opens a part at k approvals.
"""

from tsunagi.privacy.shamir import Share, combine, split
from tsunagi.privacy.slip39 import combine_mnemonics, split_mnemonics

__all__ = ["Share", "combine", "combine_mnemonics", "split", "split_mnemonics"]
