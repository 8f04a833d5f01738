"""Taking the caller's turn: the per-state turn policy enforced on every frame (gate.py)
and the learned end-of-turn model it can ask (smart.py)."""
