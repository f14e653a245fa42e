"""Where things are: resampling onto grids, rigid registration (its start and QA), the template,
brain extraction and the skull-stripped check."""
