"""Versioned SQL migrations of the projector's read models (yoyo-migrations).

A package only so that wheels ship the .sql files; `adapters.migrate` drops
this module from yoyo's list. Statements use unqualified names: each schema
(live `projection` or the rebuild's shadow) is migrated with its own
search_path and keeps its own yoyo history, so a rebuilt schema carries a
complete history when it is swapped in.
"""
