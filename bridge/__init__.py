"""campus-bridge: campus domain events on Kafka -> phone notifications through the TOP gateway."""

__version__ = "0.1.0"
