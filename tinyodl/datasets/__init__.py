"""Data files shipped with tinyodl (see README.md here for provenance and licence)."""
