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
* `dataset`: the stage itself (`prepare_dataset`), the splits and `load_split`.
"""
