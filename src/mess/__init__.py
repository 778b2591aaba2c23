"""Music Embedding Similarity Search."""
