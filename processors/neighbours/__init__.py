"""ReMoDiffuse's retrieval database side: hybrid neighbours and caption rareness (dataset steps)."""
