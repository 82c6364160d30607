"""`python scripts/bench_inference.py ARGS` is `imgrec bench_inference ARGS` (imgrec.verbs.bench_inference), for older command lines."""

import sys

from imgrec.cli import main

main(["bench_inference", *sys.argv[1:]])
