"""One report for every driver: sections of text and tables, figures, and metrics, written as Markdown, CSV,
LaTeX (booktabs) and PNG, and logged to an MLflow run.

    report = Report("Robustness of runs:/abc", [Section(text="...", table=Table("results", columns, rows))],
                    figures=[Figure("robust_acc.png", draw)], metrics={"clean_acc": 0.91})
    report.publish(folder, run)   # report.md, report.tex, results.csv, robust_acc.png; files, metrics and the
                                  # Markdown (the run's description) logged to the run

A table's rows are plain dicts of raw values: the CSV holds them as they are (every key), while Markdown and
LaTeX show the table's columns, formatted. Files are written atomically (several sweep workers may report at
once). This module is also where matplotlib is set up, once, to draw into files only.
"""

import csv
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the one place imgrec sets matplotlib up
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

MISSING = "-"  # how an absent value (None, NaN) is shown
CONSOLE_ROWS = 30  # a longer table is cut short when printed; the files keep every row


@dataclass(frozen=True)
class Column:
    """One shown column: `value` is a row key or a function of the row; `fmt` a format spec (".4f") or a function."""

    title: str
    value: str | Callable[[Mapping[str, Any]], Any]
    fmt: str | Callable[[Any], str] = ""
    align: str = "right"  # right | left

    def cell(self, row: Mapping[str, Any]) -> str:
        value = self.value(row) if callable(self.value) else row.get(self.value)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        if callable(self.fmt):
            return self.fmt(value)
        return format(value, self.fmt) if self.fmt else str(value)


def text_column(title: str, value: str | Callable[[Mapping[str, Any]], Any]) -> Column:
    return Column(title, value, align="left")


@dataclass
class Table:
    """`rows` of raw values; `columns` say what Markdown and LaTeX show of them. `name` names the CSV file.
    Row keys starting with "_" (a cell prepared for showing) and `footer` rows (a mean ± std, say) are shown but
    are not data: the CSV leaves them out."""

    name: str
    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]]
    caption: str = ""  # LaTeX's caption (the Markdown has the section's text)
    footer: Sequence[Mapping[str, Any]] = ()

    def markdown(self, limit: int | None = None) -> str:
        shown = self.rows if limit is None else self.rows[:limit]
        lines = ["| " + " | ".join(c.title for c in self.columns) + " |",
                 "|" + "".join("---:|" if c.align == "right" else "---|" for c in self.columns)]
        lines += ["| " + " | ".join(c.cell(row).replace("|", "\\|") for c in self.columns) + " |"
                  for row in [*shown, *self.footer]]
        if len(shown) < len(self.rows):
            lines.append(f"\n... {len(self.rows) - len(shown)} more rows in {self.name}.csv")
        return "\n".join(lines)

    def csv(self) -> str:
        keys = list(dict.fromkeys(k for row in self.rows for k in row if not k.startswith("_")))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="", extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in self.rows)
        return out.getvalue()

    def latex(self) -> str:
        """A booktabs table: \\toprule, \\midrule, \\bottomrule; one column per shown column."""
        spec = "".join("r" if c.align == "right" else "l" for c in self.columns)
        body = [" & ".join(latex_text(c.title) for c in self.columns) + r" \\", r"\midrule"]
        body += [" & ".join(latex_text(c.cell(row)) for c in self.columns) + r" \\" for row in self.rows]
        if self.footer:
            body += [r"\midrule", *(" & ".join(latex_text(c.cell(row)) for c in self.columns) + r" \\"
                                    for row in self.footer)]
        caption = [rf"\caption{{{latex_text(self.caption)}}}"] if self.caption else []
        return "\n".join([r"\begin{table}[ht]", r"\centering", *caption, rf"\label{{tab:{self.name}}}",
                          rf"\begin{{tabular}}{{{spec}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}",
                          r"\end{table}"])


@dataclass
class Section:
    """A heading, paragraphs of Markdown, a table, bullets: each optional, in that order."""

    heading: str | None = None
    text: str | Sequence[str] = ()
    table: Table | None = None
    bullets: Sequence[str] = ()
    after: str | Sequence[str] = ()  # paragraphs after the table (notes, sources)

    def paragraphs(self, which: str | Sequence[str]) -> list[str]:
        return [which] if isinstance(which, str) else list(which)


@dataclass
class Figure:
    """A PNG: `draw()` returns a matplotlib figure (from `figure()` or a library's plot); saved and closed here."""

    name: str
    draw: Callable[[], Any]


@dataclass
class Report:
    title: str
    sections: Sequence[Section] = ()
    figures: Sequence[Figure] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)  # logged to the run, at `step`
    tags: Mapping[str, str] = field(default_factory=dict)  # logged to the run
    step: int = 0  # e.g. a sweep's finished trials: a report logged again as the study grows draws a history
    data: Sequence[Table] = ()  # tables written as CSV only (a sweep's every trial): data, not for reading
    name: str = "report"  # report.md, report.tex
    attachments: Sequence[Path] = ()  # files the driver wrote itself (arrays, models): logged with the report's
    failures: Sequence[str] = ()  # what could not be done (the command says so and exits 1 after the rest)
    folder: Path | None = None  # where publish() wrote it
    run_id: str | None = None  # the run publish() logged it to
    made: str = ""  # what the verb made, for the next command (runs:/<id> of a new model): the console's last line

    @property
    def tables(self) -> list[Table]:
        return [s.table for s in self.sections if s.table is not None]

    def markdown(self, limit: int | None = None) -> str:
        lines = [f"# {self.title}", ""]
        for section in self.sections:
            if section.heading:
                lines += [f"## {section.heading}", ""]
            for paragraph in section.paragraphs(section.text):
                lines += [paragraph, ""]
            if section.table is not None:
                lines += [section.table.markdown(limit), ""]
            if section.bullets:
                lines += [*(f"- {b}" for b in section.bullets), ""]
            for paragraph in section.paragraphs(section.after):
                lines += [paragraph, ""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def latex(self) -> str:
        """A fragment to \\input{} (needs \\usepackage{booktabs}): the text as paragraphs, each table a table float."""
        parts = [f"% {latex_text(self.title)}", "% needs \\usepackage{booktabs}"]
        for section in self.sections:
            if section.heading:
                parts.append(rf"\paragraph{{{latex_text(section.heading)}}}")
            parts += [latex_text(p) for p in section.paragraphs(section.text)]
            if section.table is not None:
                parts.append(section.table.latex())
            if section.bullets:
                parts += [r"\begin{itemize}", *(rf"\item {latex_text(b)}" for b in section.bullets), r"\end{itemize}"]
            parts += [latex_text(p) for p in section.paragraphs(section.after)]
        return "\n\n".join(parts) + "\n"

    def write(self, folder: Path) -> list[Path]:
        """The files into `folder`: NAME.md, NAME.tex, a CSV per table, a PNG per figure that could be drawn."""
        folder.mkdir(parents=True, exist_ok=True)
        files = [write_atomically(folder / f"{self.name}.md", self.markdown()),
                 write_atomically(folder / f"{self.name}.tex", self.latex())]
        files += [write_atomically(folder / f"{t.name}.csv", t.csv()) for t in [*self.tables, *self.data]]
        for figure in self.figures:
            if save_figure(figure, folder / figure.name):
                files.append(folder / figure.name)
        return files + [Path(a) for a in self.attachments]

    def publish(self, folder: Path, run=None) -> list[Path]:
        """Write the files, then log them, the metrics and the Markdown (as the run's description) to `run`
        (an imgrec.tracking.driver_run.DriverRun), if given."""
        files = self.write(folder)
        self.folder = folder
        if run is not None:
            run.log(self.metrics, files, tags=self.tags, note=self.markdown(), step=self.step)
            self.run_id = run.run_id
        return files

    def where(self) -> str:
        """The console's last line: where the report went."""
        run = f" (MLflow run {self.run_id})" if self.run_id else ""
        return f"{self.folder}{run}" if self.folder else ""


def figure(width: float = 6.4, height: float = 4.4, **kwargs):
    """(figure, axes) to draw a report's figure on: plt.subplots, headless."""
    return plt.subplots(figsize=(width, height), **kwargs)


def save_figure(item: Figure, path: Path) -> bool:
    """Draw and save one figure; one that cannot be drawn is skipped with a warning (a plot is never the result)."""
    try:
        fig = item.draw()
        fig = getattr(fig, "figure", fig)  # a library may hand back its axes
        save(fig, path)
        return True
    except Exception as err:
        log.warning("%s skipped: %s", item.name, err)
        plt.close("all")
        return False


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as a PNG (atomically) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a library's axes (Optuna's colour bars) may not fit tight_layout: drawn as is
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")  # a title or labels wider than the axes are kept whole
    plt.close(fig)
    tmp.replace(path)
    return path


def write_atomically(path: Path, text: str) -> Path:
    """Readers see one whole file or the other, never a mix (several workers may report at once)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
                 "↓": r"$\downarrow$", "↑": r"$\uparrow$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$",
                 "→": r"$\rightarrow$", "−": "-", "<": r"$<$", ">": r"$>$"}  # < and > are other glyphs in text mode
LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in LATEX_SPECIAL))


def latex_text(text: str) -> str:
    """Markdown-ish text as LaTeX: special characters escaped, `code` as \\texttt, **bold** as \\textbf."""
    parts = re.split(r"(`[^`]*`|\*\*[^*]+\*\*)", str(text))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(r"\texttt{" + LATEX_PATTERN.sub(lambda m: LATEX_SPECIAL[m.group()], part[1:-1]) + "}")
        elif part.startswith("**") and part.endswith("**") and len(part) > 3:
            out.append(r"\textbf{" + LATEX_PATTERN.sub(lambda m: LATEX_SPECIAL[m.group()], part[2:-2]) + "}")
        else:
            out.append(LATEX_PATTERN.sub(lambda m: LATEX_SPECIAL[m.group()], part))
    return "".join(out)
