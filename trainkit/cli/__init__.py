"""The ``trainkit`` command line (``trainkit.cli:main``): the group, its shared options and
the core commands live in :mod:`trainkit.cli.app`; commands of larger features have a module
each in this package and register themselves on the group when it is imported."""

from trainkit.cli.app import (  # noqa: F401
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    cli,
    expand_multi_value,
    main,
    run,
    setup_logging,
    train,
)

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "cli", "expand_multi_value", "main", "run",
           "setup_logging", "train"]
