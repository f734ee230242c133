"""Pure, Dagster-free readers and fetchers for the datasets Multi-KG4Rec trains on.

Everything here takes paths/URLs and returns plain Python, NumPy or Arrow objects so that it can
be used and tested without Dagster: the HTTP layer (`http`), safe archive extraction
(`archive`), the dataset registry (`registry`), format parsers (`formats`) and the split
(`split`).
"""
