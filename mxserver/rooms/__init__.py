"""The room server: auth rules, state resolution, per-room sequencing and persistence, inbound events."""
