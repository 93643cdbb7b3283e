"""Worked examples that use bertrec; part of the repository, not of the installed library."""
