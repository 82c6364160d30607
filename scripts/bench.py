"""`python scripts/bench.py ARGS` is `imgrec bench ARGS` (imgrec.verbs.bench), for older command lines."""

import sys

from imgrec.cli import main

main(["bench", *sys.argv[1:]])
