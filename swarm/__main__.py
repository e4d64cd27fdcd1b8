"""`python -m swarm ...`: the command line (see `swarm.cli`)."""

from .cli import main

raise SystemExit(main())
