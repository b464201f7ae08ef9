"""Kafka side of the bridge: record decoding, offset tracking, the consumer source and the dead-letter sink."""
