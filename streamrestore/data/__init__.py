"""Training and evaluation data: sources and their licences, packing, degradations, samples."""
