"""Files: pixels and metadata in and out, and the one gate every file read and write goes through.

One module a job; import the module you need (this package imports nothing itself):

* :mod:`~defocus_cli.io.read`: the one image decoder. A JPEG / PNG / TIFF / WebP (HEIC, RAW) file or its
  bytes → an upright :class:`~defocus_cli.io.read.Photo` (``read_photo``), or its stored integer samples
  (``read_samples``, for dual-pixel views and training data).
* :mod:`~defocus_cli.io.write`: processed pixels → a file like the input (``encode_photo``, ``write_photo``).
* :mod:`~defocus_cli.io.metadata`: EXIF orientation, the EXIF block a result carries, CMYK through its ICC.
* :mod:`~defocus_cli.io.encoders`: JPEG / WebP through Pillow, PNG (with ``iCCP``/``eXIf``) and baseline
  TIFF written by hand.
* :mod:`~defocus_cli.io.heif_raw`: the optional HEIC (pillow-heif) and camera RAW (rawpy) codecs.
* :mod:`~defocus_cli.io.formats`: format names, the one list of image extensions, the one folder scanner.
* :mod:`~defocus_cli.io.maps`: defocus-map files (npy / png16 / tif), previews, dual-pixel view pairs.
* :mod:`~defocus_cli.io.atomic`: every file read (regular files only, never blocking) and written
  (checked for the whole command first, then temporary file, fsync, rename).
"""
