"""The project's errors and the one place they become a one-line exit.

A DataError says what is wrong with an input (file, line, key or flag) and what to do; scripts never show a
traceback for one. Every kind of bad input is a DataError or a subclass of it.
"""
import os


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what to do."""


class TokenizerMismatchError(DataError):
    """A prefix tree used with another tokenizer than the one it was built with."""


class Stopped(DataError):
    """Another process of a data-parallel run failed; it (or the main process) printed why, this one stops quietly."""


def is_main_process():
    """Rank 0 of a launched group (torchrun, accelerate launch), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def exit_on_error(body, *args):
    """Run body(*args); a DataError ends the process with one `error: ...` line instead of a traceback.

    Under a launcher only the main process prints it; the others exit with status 1 quietly (they failed on the same
    input, or stopped because another process failed).
    """
    try:
        return body(*args)
    except DataError as error:
        if not is_main_process():
            raise SystemExit(1) from None
        raise SystemExit(f"error: {error}") from None
