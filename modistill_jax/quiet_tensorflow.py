"""TensorFlow, imported without its start-up noise, for the commands that use it.

`export` (a SavedModel through jax2tf) and `pretrained` (a slim checkpoint's
reader) are the only users of TensorFlow itself. Loaded plainly on a machine
without its GPU build's drivers, TensorFlow writes, before the command says
anything, lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

None of it is about the command's work. Two mechanisms produce it, so two
measures silence it:

* `TF_CPP_MIN_LOG_LEVEL=3`: the C++ log below FATAL, the cuInit error among
  it. `import jax` sets it to 1 unless it is set; another value, the user's,
  is kept. XLA's C++ logging, which
  JAX's runtime starts at its first computation, reads it too, and TensorFlow's
  messages go through it once it is started; so a command sets it as it starts
  (`quiet_native_logging`), before its first JAX computation. A TensorFlow or
  XLA failure still reaches the command as a Python exception.
* The INFO lines its libraries write while they load, before absl's C++
  logging is initialised, no setting reaches. While TensorFlow loads, stderr
  (the file descriptor) is held back, and every line written meanwhile that is
  not one of those is passed on afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from types import ModuleType

LOG_LEVEL_ENV = 'TF_CPP_MIN_LOG_LEVEL'
JAX_DEFAULT_LOG_LEVEL = '1'  # what `import jax` sets where the user set nothing
# The lines `import tensorflow` writes before absl's C++ logging is initialised.
_LOADING_INFO = re.compile(
    r'WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$'
    r'|I\d{4} [\d:.]+ +\d+ \S+:\d+\] '
)


def quiet_native_logging() -> None:
  """Native (C++) logs below FATAL off, unless the user set a level; before any JAX work."""
  if os.environ.get(LOG_LEVEL_ENV, JAX_DEFAULT_LOG_LEVEL) == JAX_DEFAULT_LOG_LEVEL:
    os.environ[LOG_LEVEL_ENV] = '3'


def import_tensorflow() -> ModuleType:
  """`import tensorflow`, quietly (see the module's docstring); a no-op once it is loaded."""
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  quiet_native_logging()
  with _loading_info_dropped():
    return importlib.import_module('tensorflow')


@contextlib.contextmanager
def _loading_info_dropped():
  """Holds back what is written to file descriptor 2 and passes on all but `_LOADING_INFO`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      lines = held.read().decode(errors='replace').splitlines(keepends=True)
      sys.stderr.write(''.join(line for line in lines if not _LOADING_INFO.match(line)))
      sys.stderr.flush()
