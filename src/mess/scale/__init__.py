"""Scale-out: distributed extraction on Ray and reduced-precision GPU inference."""
