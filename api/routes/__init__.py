"""One router per resource: search, images, system."""
