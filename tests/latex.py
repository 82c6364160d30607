"""A structural check of the LaTeX imgrec writes, where no TeX is installed to compile it."""

import re

BEGIN_END = re.compile(r"\\(begin|end)\{(\w+)\}(?:\{([^}]*)\})?")


def check_balanced(tex: str) -> int:
    """Every \\begin{X} closed by its \\end{X} in order; every tabular row (a line ending in \\\\) with as many cells
    as its column spec; braces balanced. Returns the number of tabulars checked; raises AssertionError otherwise."""
    stack, tabulars, columns = [], 0, None
    for line in tex.splitlines():
        for kind, env, spec in BEGIN_END.findall(line):
            if kind == "begin":
                stack.append(env)
                if env == "tabular":
                    columns, tabulars = len(re.sub(r"[^lcrp]", "", spec)), tabulars + 1
                    assert columns > 0, f"tabular without columns: {line}"
            else:
                assert stack and stack[-1] == env, f"\\end{{{env}}} closes {stack[-1:] or 'nothing'}: {line}"
                stack.pop()
                columns = None if env == "tabular" else columns
        if columns is not None and line.rstrip().endswith(r"\\"):
            cells = len(re.split(r"(?<!\\)&", line))
            assert cells == columns, f"{cells} cells in a {columns}-column tabular: {line}"
    assert not stack, f"unclosed: {stack}"
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}"), "unbalanced braces"
    return tabulars
