"""MovieLens ml-latest-small: loading, item texts, the temporal split, metrics and the demo.

The data is read in place from the folder given by ``--data`` or ``$BERTREC_MOVIELENS``.
"""
