"""What a run says: the standard logging module, at INFO on the main process and ERROR on the others.

Every logger of the project sits under "mel" (modules of the package by their __name__, the top-level files as
`mel.<file>`). Its messages go to standard output as plain lines (warnings prefixed `warning:`), the same from one
process or N. The handler looks up sys.stdout when it writes, so output redirected after set-up (a test's capture, a
notebook) still receives it. Other libraries' loggers are left as they are.
"""
import logging
import sys

from mel.errors import is_main_process


class _Stdout(logging.StreamHandler):
    """A StreamHandler writing to whatever sys.stdout is at each message."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):  # StreamHandler.__init__ assigns it; the property always answers sys.stdout
        pass


class _Format(logging.Formatter):
    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def project_logger(name):
    """The logger of a top-level file (main.py: "mel.main"), under the project's namespace."""
    return logging.getLogger(f"mel.{name}")


def setup_logging(main_process=None):
    """Route the project's log messages to stdout: INFO and above on the main process, ERROR and above elsewhere.

    Idempotent: a second call (a test running several scripts in one process) replaces the handler it installed.
    """
    main_process = is_main_process() if main_process is None else main_process
    project = logging.getLogger("mel")
    for handler in [h for h in project.handlers if isinstance(h, _Stdout)]:
        project.removeHandler(handler)
    handler = _Stdout()
    handler.setFormatter(_Format("%(message)s"))
    project.addHandler(handler)
    project.setLevel(logging.INFO if main_process else logging.ERROR)
    project.propagate = False
