"""The write stage: list, route, encode, store and commit a dataset's generation."""
