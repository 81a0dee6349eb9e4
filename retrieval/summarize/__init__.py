"""Optional comparative summaries of a query and its top matches (MedGemma, locally or on a server)."""
