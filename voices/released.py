"""The names of the voices released with PersonaPlex (`voices.tgz` holds `voices/{name}.pt`).

NAT voices sound natural and conversational, VAR voices are more varied; F female, M male.
"""

RELEASED_VOICES: frozenset[str] = frozenset(
    [f"NATF{i}" for i in range(4)]
    + [f"NATM{i}" for i in range(4)]
    + [f"VARF{i}" for i in range(5)]
    + [f"VARM{i}" for i in range(5)]
)
