"""Pure decision logic: no sleeping, no awaiting, no I/O.

Time arrives as an argument and randomness through an injected source, so
every rule here is tested with plain values.
"""
