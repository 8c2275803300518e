"""Manifest builders: public chest X-ray datasets in their published layouts, with CheXmask masks."""
