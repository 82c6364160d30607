"""`imgrec sync [paths.root=...]`: send what runs logged while their tracking server was unreachable.

A run whose `mlflow server` went away and did not come back before the run ended keeps its unsent writes (metrics,
tags, artifacts, its final status) in a spool under its run directory (imgrec.tracking.spool); this sends every
spool under outputs/ into its own run on its own server, in order, and removes it. A spool whose server is still
unreachable stays, and is one line. The next run against that server sends them too.
"""

from pathlib import Path

from imgrec.errors import ImgrecError, one_line
from imgrec.jobs import Job, Verb
from imgrec.report import Column, Report, Section, Table, text_column
from imgrec.tracking.spool import send_spool, spools_under


def run(job: Job) -> Report:
    outputs = Path(job.cfg.paths.root) / "outputs"
    rows, failures = [], []
    for spool in spools_under(outputs):
        try:
            run_id, sent = send_spool(spool)
            rows.append({"spool": str(spool.relative_to(outputs)), "run": run_id, "writes": sent})
        except Exception as err:  # noqa: BLE001 - the server still away: the spool stays, the others go on
            failures.append(f"{spool}: not sent, kept ({one_line(err)[:200]})")
    if not rows and not failures:
        raise ImgrecError(f"nothing to send: no spool under {outputs}")
    table = Table("sync", [text_column("spool", "spool"), text_column("run", "run"), Column("writes", "writes")], rows)
    return Report(f"{len(rows)} spool{'s' * (len(rows) != 1)} sent", [Section(table=table)], failures=failures)


VERB = Verb("sync", __doc__, run)
