"""Replication: copy images between registries (manifests, blobs, referrers) and decide what to copy."""
