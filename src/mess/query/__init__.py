"""Queries from anywhere: a collection track, or any audio file embedded like the collection was.

The one place that turns a file outside the store into a search seed (CLI, server and
playlists all come here), so a layer above both search and fusion can add the fused
vector when the run has one.
"""

from mess.query.embed import UNKNOWN_QUERY, credit_of, embed_query, external_query, resolve_query

__all__ = ["UNKNOWN_QUERY", "credit_of", "embed_query", "external_query", "resolve_query"]
