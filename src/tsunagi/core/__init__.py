"""Context-free pieces of tsunagi: records and their bytes, keys, blocks, config, result codes.

Nothing here knows of storage or the network.
"""
