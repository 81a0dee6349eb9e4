"""Where images come from (ingest's plan + read stage) and how their bytes are read back for rendering."""
