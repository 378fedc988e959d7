"""Issue 19's reliability and security campaign: groups of rows, each row an attack or a fault with
its outcome asserted, run on loopback.

    python -m bench.campaign [--groups hostile,...] [--json bench/campaign.json] [group options]

Each group is a module of this package with `arguments(parser)` (its options) and `async run(args)`
(its rows); `__main__` lists them. Prints a table; writes JSON; exits non-zero when a row fails.
"""
