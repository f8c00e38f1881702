"""Compiled core of tsunagi, built from ext/ by setup.py. Import the Python layers instead."""
