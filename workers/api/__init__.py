"""Management API (SWR v2 compatible) and its authentication."""
