"""The runtime shared by every role: Kafka clients, the consumer runner, retries, shutdown."""
