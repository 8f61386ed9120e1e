"""On-disk formats: the release reader, the Arrow schema and writers, the reader of a build folder, samples."""
