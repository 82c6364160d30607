"""`python scripts/sync.py ARGS` is `imgrec sync ARGS` (imgrec.verbs.sync), for older command lines."""

import sys

from imgrec.cli import main

main(["sync", *sys.argv[1:]])
