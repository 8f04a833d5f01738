"""Examples of turnchart extended with your own behaviours: each sub-package has a
chart, a `registry.py` with the guards, effects and activities the chart names,
and a `config.yaml` to serve it with (see README, "Serve your own behaviours")."""
