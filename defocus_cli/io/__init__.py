"""Files: pixels and metadata in and out, and the one gate every file read and write goes through."""
