"""Search results back to the PACS: a DICOM Structured Report, sent by C-STORE or STOW-RS."""
