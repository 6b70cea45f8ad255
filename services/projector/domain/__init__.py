"""The projector's pure core: folds of events into read-model rows, and the
rules the read models apply (status, aging buckets, reorder formula).

No I/O, no clock: the adapters load rows, the folds compute new row images,
the adapters write them back set-based.
"""
