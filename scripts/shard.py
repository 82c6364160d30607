"""`python scripts/shard.py ARGS` is `imgrec shard ARGS` (imgrec.verbs.shard), as the other verbs' aliases."""

import sys

from imgrec.cli import main

main(["shard", *sys.argv[1:]])
