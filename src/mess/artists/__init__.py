"""Artist similarity: artist profiles, set-to-set similarity, layer discrimination, validation, hybrid scoring."""
