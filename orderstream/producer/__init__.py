"""The producer: extract pending source events, validate them, publish the valid ones, commit progress."""
