"""The ingress: registry notifications in, image events on Kafka out."""
