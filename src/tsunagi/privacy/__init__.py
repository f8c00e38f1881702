"""The document vault: Shamir sharing of part keys, holders and their keys, PINs the
confidentiality service rate-limits, and the authenticated channel from a holder to it."""
