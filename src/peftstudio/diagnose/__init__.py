"""Name what went wrong in a run (or is going wrong) and the overrides to try."""
