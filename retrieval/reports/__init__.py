"""Reports of studies: DICOM SR and imported text, de-identified, negation-aware, stored for words search."""
