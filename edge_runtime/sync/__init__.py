"""Everything that leaves or reaches the device over MQTT: topics, the durable outbox, the
MQTT connection and the publisher that drains the outbox."""
