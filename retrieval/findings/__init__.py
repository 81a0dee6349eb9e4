"""Teaching the archive a finding: zero-shot tags and few-shot probes over the stored vectors."""
