"""The data stage: a source (an archive, a folder of images, synthetic data) read within
bounds, decoded, split and stored in S3.

* `sources`: where the bytes come from (the official download, a path, an ``s3://`` URI),
  with the caps on what is fetched;
* `files`: local files: digests, bounded downloads, archive members;
* `decoding`: archives and images to arrays, with the format allowlist and pixel caps;
* `tar_stream`: an archive's tar stream read within bounds (members, sizes, decompressed bytes);
* `pickled_batches`: the restricted unpickler of the official tarball's pickled batches;
* `safety`: what an untrusted URL, path or member name may be;
* `errors`: the one error type (`DataError`) and its message helpers;
* `folders`: a folder of labelled images (a directory or an ``s3://`` prefix) as a source;
* `images`: one image file of any size to the models' input;
* `versions`: a folder source's immutable dataset versions, read back and compared;
* `snapshot`: making a version (one listing; only new files read and decoded);
* `dataset`: the stage itself (`prepare_dataset`), the splits and `load_split`.

May import: `compare_models.config` and `compare_models.storage`. Never the models, training,
evaluation, statistics, runs, gate, report or CLI (an import-linter contract holds it to that).
"""
