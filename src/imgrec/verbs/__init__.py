"""The drivers of `imgrec VERB`, one module each: a short spec (imgrec.jobs.Verb) over the job kernel
(imgrec.jobs) and the report (imgrec.report). imgrec.cli lists them."""
