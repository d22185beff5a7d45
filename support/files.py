"""Writing the run's files so that a full disk (or any write error) costs nothing already written.

Every writer here either completes or leaves the previous state of its file as it was (no temp
file left behind, no half line in metrics.jsonl), and raises WriteError: a message in one line
saying what could not be written and why, for the caller to report instead of a traceback.
"""
import contextlib
import os


class WriteError(Exception):
    """A run file could not be written; the message says which and why (e.g. disk full)."""


class _RecordingWriter:
    """A file wrapper that remembers the OSError of a failed write: torch.save turns it into
    an opaque RuntimeError ("unexpected pos 704 vs 598"), and the user wants "No space left"."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):  # flush, tell, seek...: the file's own
        return getattr(self.f, name)


def _reason(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


def write_atomically(path, write, what):
    """write(file) into path + ".tmp", then rename it over path: readers, and a crash or a kill
    mid-write, see the old file or the new one, never half. On any error the temp file is
    removed, path is untouched and WriteError says why."""
    tmp = path + ".tmp"
    writer = None
    try:
        with open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            write(writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new, never half
        if os.name == "posix":  # make the rename itself durable (Windows cannot open a directory)
            dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch.save's report of a failed write
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise WriteError(f"cannot write {what} {path}: {_reason((writer and writer.error) or e)}") from None


def append_line(path, line, what):
    """Append one line; on an error, cut the file back to where it was (no half line)."""
    start = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        with contextlib.suppress(OSError):
            os.truncate(path, start)
        raise WriteError(f"cannot write {what} {path}: {_reason(e)}") from None
