"""Entry points for programs written with other frameworks (DSPy so far).

Each integration turns the framework's program into a :class:`policyopt.Program` with named
components and runs policyopt's optimizers on it. This layer sits on top of the package: it
imports everything below it and nothing imports it.
"""
