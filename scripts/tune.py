"""`python scripts/tune.py ARGS` is `imgrec tune ARGS` (imgrec.verbs.tune), as the other verbs' aliases."""

import sys

from imgrec.cli import main

main(["tune", *sys.argv[1:]])
