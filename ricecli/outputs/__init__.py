"""What a run leaves behind: the result record, the console summary, DICOM, overview PNG."""
