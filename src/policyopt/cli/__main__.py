"""``python -m policyopt.cli``: the ``policyopt`` command."""

from policyopt.cli import main

main()
