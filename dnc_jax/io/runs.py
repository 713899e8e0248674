"""Run directories: the ``--out`` rules and interrupts.

Files are written by :mod:`dnc_jax.io.atomic` and :mod:`dnc_jax.io.jsonio`
(re-exported here, so a run module needs one import).

Every command checks ``--out`` with :func:`check_out` before any work, and
handles SIGINT/SIGTERM with :func:`deferred_interrupts`: the signal only sets a
flag, which the run reads at its next safe point (a finished layer or epoch)
with :func:`check_interrupt`, so compiled code is never interrupted halfway.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Iterable

from dnc_jax.errors import ConfigError
from dnc_jax.io.atomic import (atomic_write_bytes, atomic_write_text, atomic_write_with,  # noqa: F401
                               write_npz, write_npz_uncompressed)
from dnc_jax.io.jsonio import clean, write_csv, write_json, write_jsonl  # noqa: F401

RUN_MARKERS = ("config.json", "metrics.json", "history.jsonl")


def check_out(out, *, overwrite: bool = False, resume: bool = False,
              markers: Iterable[str] = RUN_MARKERS, unfinished: str | None = None,
              resume_hint: str | None = None, flag: str = "--out") -> pathlib.Path:
  """The ``--out`` rules of every command, checked before any work.

  ``out`` must be a directory, or not exist yet under a directory, and this
  process must be able to write there; a directory holding a run (any of
  ``markers``, or ``unfinished``: the mark of an interrupted run) is refused
  unless ``overwrite`` (start afresh) or ``resume``. Nothing is created.

  Args:
    out: the ``--out`` path.
    overwrite: a run already in ``out`` may be replaced.
    resume: ``out`` holds the run to continue (only writability is checked).
    markers: file or folder names that mark a run of this command.
    unfinished: a file or folder name that marks an interrupted run.
    resume_hint: how to continue a run there (e.g. ``"--resume"``), named in the refusal.
    flag: the option that named ``out``, for the messages.

  Raises:
    ConfigError: one line naming the problem and the fix.
  """
  out = pathlib.Path(out)
  if out.exists() and not out.is_dir():
    raise ConfigError(f"{flag} {out} is a file, not a directory; give a directory path")
  base = out.absolute()
  while not base.exists():
    base = base.parent
  if not base.is_dir():
    raise ConfigError(f"{flag} {out}: {base} is a file, not a directory; give a path "
                      "under a directory")
  try:   # try it: permission bits do not tell for root, read-only mounts or ACLs
    fd, probe = tempfile.mkstemp(prefix=".dnc_jax_write_test.", dir=base)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    where = "" if base == out.absolute() else f" (in {base})"
    raise ConfigError(f"{flag} {out}: cannot write there{where}: {e.strerror or e}; choose "
                      f"another {flag}") from None
  if resume or overwrite:
    return out
  if unfinished is not None and (out / unfinished).exists():
    raise ConfigError(f"{out} holds an interrupted run; continue it with "
                      f"{resume_hint or '--resume'}, or pass --overwrite to start afresh")
  held = [m for m in markers if (out / m).exists()]
  if held:
    cont = f"continue it with {resume_hint}, or " if resume_hint else "choose another --out, or "
    raise ConfigError(f"{out} already holds a run ({', '.join(held)}); {cont}pass "
                      "--overwrite to replace it")
  return out


@contextlib.contextmanager
def removed_if_left_empty(out):
  """Removes ``out`` (and the parents made for it) when a failure leaves it empty.

  Only folders that did not exist on entry and are empty on failure are
  removed, so a failed or interrupted run leaves no empty run directory.
  """
  made = []
  p = pathlib.Path(out).absolute()
  while not p.exists():
    made.append(p)
    p = p.parent
  try:
    yield
  except BaseException:
    for d in made:   # innermost first; stops at the first folder that is not empty
      try:
        d.rmdir()
      except OSError:
        break
    raise


def clear_run_files(out: pathlib.Path, names: Iterable[str]) -> None:
  """Removes the named files of a previous run (only those) before a new run."""
  for name in names:
    p = out / name
    if p.is_file():
      p.unlink()


# ----------------------------------------------------------------------------- interrupts

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM arrived; raised at the run's next safe point."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    """130 for SIGINT, 143 for SIGTERM (128 + the signal number)."""
    return 128 + int(self.signum)


_received: list[int] = []
_callbacks: list[tuple] = []   # (on_first, on_second) of the active deferred_interrupts


def _handler(signum, frame) -> None:
  first = not _received
  _received.append(signum)
  for on_first, on_second in _callbacks:
    fn = on_first if first else on_second
    try:
      if fn is not None:
        fn(signum)
    except Exception:   # stopping matters more than the message
      pass
  if first:
    return
  # A second signal: the user will not wait for the safe point.
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:
      pass
  os._exit(EXIT_CODES.get(signum, 128 + int(signum)))


def interrupt_requested() -> bool:
  """True once SIGINT or SIGTERM arrived inside :func:`deferred_interrupts`."""
  return bool(_received)


def check_interrupt() -> None:
  """Raises :class:`Interrupted` if a signal arrived; call it at safe points."""
  if _received:
    raise Interrupted(_received[0])


@contextlib.contextmanager
def deferred_interrupts(on_second: Callable[[int], None] | None = None, *,
                        on_first: Callable[[int], None] | None = None):
  """SIGINT and SIGTERM only set a flag inside; :func:`check_interrupt` acts on it.

  A Python exception raised while XLA compiles, or an exit with compiler
  threads still running, can crash the process; a flag read between layers or
  epochs cannot. The first signal calls ``on_first(signum)`` (e.g. to say when
  the run will stop); a second calls ``on_second(signum)`` (e.g. to print the
  resume command) and exits at once with 130 (SIGINT) or 143 (SIGTERM). A
  SIGINT ignored on entry (a background job) stays ignored. Outside the main
  thread this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {}
  for sig in EXIT_CODES:
    current = signal.getsignal(sig)
    if sig == signal.SIGINT and current == signal.SIG_IGN:
      continue
    previous[sig] = current
    signal.signal(sig, _handler)
  _received.clear()
  entry = (on_first, on_second)
  _callbacks.append(entry)
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    _received.clear()
    _callbacks.remove(entry)
