"""`python -m swarm.simulate ...`: the simulator's command line (see `swarm.simulate.cli`).

The protocol core iterates some sets of strings (the order it dials addresses in, say), and Python
randomises string hashes per process, so two processes given the same seed could take different paths.
For byte-identical output across runs, this entry point re-executes itself with PYTHONHASHSEED=0 unless
the caller fixed a value already.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED", "random") == "random":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, "-m", "swarm.simulate", *sys.argv[1:]])

from .cli import main  # noqa: E402

raise SystemExit(main())
