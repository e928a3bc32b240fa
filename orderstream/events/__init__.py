"""What the topics carry: the typed event of each topic, its versioned JSON Schema, the
CloudEvents headers, and the Schema Registry serde. No I/O at import."""
