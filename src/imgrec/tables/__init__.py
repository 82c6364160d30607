"""Published tables (conf/table/NAME.yaml): spec (the rows of one budget, checked) and report (ours beside theirs).
`imgrec reproduce` (imgrec.verbs.reproduce) trains and reuses the rows' runs."""
