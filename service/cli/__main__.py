"""``python -m service.cli``: the same as the ``vigil`` script."""

from service.cli import main

main()
