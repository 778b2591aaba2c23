"""Layer discovery: which layer of a model encodes which musical aspect (`mess probe`).

targets (proxy targets from audio) -> target_cache (per track, cached) -> probes/ridge
(cross-validated probes) -> study (one run + controls) -> report (aspect map, JSON/CSV/PNG);
validation checks the whole chain on renders where the varied factor is known.
"""
