"""Local infrastructure: the Kafka jars, a local KRaft broker per home, a throwaway PostgreSQL."""
