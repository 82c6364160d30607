"""imgrec: an experiment-tracked research pipeline for image recognition."""

__version__ = "0.1.0"
