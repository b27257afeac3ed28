"""The ``trainkit`` command line (``trainkit.cli:main``): thin click commands over trainkit's API
(:class:`~trainkit.manager.TrainingManager`, :mod:`trainkit.walkforward`,
:mod:`trainkit.signals`, :mod:`trainkit.backtest`).

The package is the only place that knows every command: it adds each command module's command
to the group. The modules import downward only, so there is no import cycle:

* :mod:`~trainkit.cli.shell` — the process: :func:`run` (exit code) and :func:`main` (exits);
  errors become one line on stderr and an exit code;
* :mod:`~trainkit.cli.exit` — the exit codes and the fast exit (interpreter internals, once);
* :mod:`~trainkit.cli.group` — the group, its global options (:class:`~trainkit.cli.group.Settings`), logging;
* :mod:`~trainkit.cli.options` — shared options; every value checked by one of trainkit's
  parsers through one click type (:class:`~trainkit.cli.options.Parsed`);
* :mod:`~trainkit.cli.output` — everything printed: rows, tables, JSON, progress;
* one module per command: ``train``, ``explain``, ``list``, ``clear``, ``backtest``,
  ``register``, ``walkforward``, ``tune``, ``promote``, ``signal``. A command module imports the shared modules above,
  never this package.

The package's names ``train``, ``explain``, … are the click commands (``trainkit.cli.train.params``);
their modules are ``sys.modules["trainkit.cli.train"]`` and so on.
"""

from trainkit.cli.backtest import backtest
from trainkit.cli.clear import clear
from trainkit.cli.exit import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_RUNTIME, EXIT_USAGE
from trainkit.cli.explain import explain
from trainkit.cli.group import cli, setup_logging
from trainkit.cli.list import list_
from trainkit.cli.options import expand_multi_value
from trainkit.cli.promote import promote
from trainkit.cli.register import register
from trainkit.cli.shell import main, run
from trainkit.cli.signal import signal
from trainkit.cli.train import train
from trainkit.cli.tune import tune
from trainkit.cli.walkforward import walkforward

for _command in (train, explain, list_, clear, backtest, register, walkforward, tune, promote, signal):
    cli.add_command(_command)
del _command

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED", "EXIT_RUNTIME", "EXIT_USAGE", "backtest", "clear", "cli", "expand_multi_value",
           "explain", "list_", "main", "promote", "register", "run", "setup_logging", "signal", "train", "tune", "walkforward"]
