"""The `plexline` command: wires the parts (agent, telephony, personas, voices) together."""
