"""Where things are: rigid registration, the template, brain extraction."""
