"""`python -m adapters.redis --redis URL …`: the headless worker (see run.py)."""

from adapters.redis.run import main

raise SystemExit(main())
