"""Tools: the ``lecl`` command line, ``lecl prepare`` and pictures for people to look at."""
