"""Analysis behind the notebooks: exploration, drawing, box uncertainty (layer 5)."""
