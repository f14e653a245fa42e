"""Read and write the file formats: MR volumes, DICOM series, RT dose, manifests, safe outputs."""
