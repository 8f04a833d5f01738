"""A table booking by voice: a dialogue flow beside the turn-taking (issue 16)."""
