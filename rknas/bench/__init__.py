"""Tabulated benchmarks: train a fixed sample of a space once (``build``), then replay search
strategies against the table in simulated time (``replay``), many times, in seconds.

``table`` is the file format both share.
"""
