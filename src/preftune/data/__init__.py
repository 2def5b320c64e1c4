"""Reading, validating, pairing and tokenising preference data (rows -> examples -> token batches)."""
