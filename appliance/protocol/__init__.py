"""Wire protocol v1: pure code, no sockets, no threads, no clocks read inside.

Every function and class here takes the time as an argument where it needs one,
so the whole protocol can be driven (and property-tested) without any I/O.
"""
